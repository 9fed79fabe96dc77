#!/usr/bin/env python3
"""Offline check of the Kubernetes manifests under k8s/ (run by `make lint`).

1. Every kustomization's references exist, and every manifest file is listed
   by the kustomization of its folder (no forgotten file).
2. Every document of every manifest file is validated against the Kubernetes
   JSON schemas of each version asked for (package kubernetes-validate,
   strict: an unknown or misspelt field is an error).
3. When kubectl with kustomize v5 or later (kubectl 1.27+) is on PATH, every kustomization is
   rendered (`kubectl kustomize DIR`), the output validated the same way, and
   its cross-references checked: selectors match pod labels, named ports and
   referenced ConfigMaps exist, HPA and ServiceMonitor targets exist. Without
   it, step 2 alone runs (generators and patches are not seen) and a note
   says so.

Kinds that no Kubernetes schema knows (custom resources) fail, except those
listed in CUSTOM_KINDS, which get a structural check of their own.

Usage: validate.py [-k VERSION]... [--no-render] [--quiet] DIR
Exit status: 0 when everything is valid, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
from typing import Callable, Iterable

import yaml

try:
    import kubernetes_validate.utils as kv
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("validate.py: the package kubernetes-validate is missing (`make k8s-lint` installs it)")

# Every schema lookup re-reads a 2 MB definitions file; read each once.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
DEFAULT_VERSIONS = ["1.30", "1.37"]
MIN_KUSTOMIZE_MAJOR = 5


class Report:
    """Collects errors and counts; printing as it goes."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.errors = 0
        self.validated = 0
        self.custom = 0

    def error(self, where: str, message: str) -> None:
        self.errors += 1
        print(f"ERROR {where}: {message}")

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message)


# --- custom resources --------------------------------------------------------


def check_servicemonitor(doc: dict, where: str, report: Report) -> None:
    """The parts of a prometheus-operator ServiceMonitor that matter here."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        report.error(where, "spec: missing")
        return
    allowed = {
        "selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
        "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit",
        "labelNameLengthLimit", "labelValueLengthLimit", "attachMetadata",
        "scrapeProtocols", "fallbackScrapeProtocol", "keepDroppedTargets",
        "bodySizeLimit", "scrapeClass", "selectorMechanism",
        "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor",
        "scrapeClassicHistograms", "convertClassicHistogramsToNHCB",
    }
    for key in spec:
        if key not in allowed:
            report.error(where, f"spec.{key}: unknown ServiceMonitor field")
    if not isinstance(spec.get("selector"), dict):
        report.error(where, "spec.selector: missing")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        report.error(where, "spec.endpoints: must be a non-empty list")
        return
    for i, endpoint in enumerate(endpoints):
        if not isinstance(endpoint, dict) or not ("port" in endpoint or "targetPort" in endpoint):
            report.error(where, f"spec.endpoints.{i}: needs port (a Service port name) or targetPort")
        elif "port" in endpoint and not isinstance(endpoint["port"], str):
            report.error(where, f"spec.endpoints.{i}.port: must be a Service port name")


def check_certificate(doc: dict, where: str, report: Report) -> None:
    """The parts of a cert-manager Certificate that matter here."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        report.error(where, "spec: missing")
        return
    allowed = {
        "secretName", "issuerRef", "dnsNames", "ipAddresses", "uris", "emailAddresses",
        "commonName", "duration", "renewBefore", "renewBeforePercentage", "usages",
        "privateKey", "isCA", "subject", "secretTemplate", "keystores",
        "revisionHistoryLimit", "additionalOutputFormats", "literalSubject",
        "encodeUsagesInRequest", "nameConstraints", "otherNames", "signatureAlgorithm",
    }
    for key in spec:
        if key not in allowed:
            report.error(where, f"spec.{key}: unknown Certificate field")
    if not isinstance(spec.get("secretName"), str):
        report.error(where, "spec.secretName: missing")
    issuer = spec.get("issuerRef")
    if not isinstance(issuer, dict) or not isinstance(issuer.get("name"), str):
        report.error(where, "spec.issuerRef.name: missing")
    if not (spec.get("dnsNames") or spec.get("ipAddresses") or spec.get("uris") or spec.get("commonName")):
        report.error(where, "spec: names nothing (dnsNames, ipAddresses, uris or commonName)")


CUSTOM_KINDS: dict[tuple[str, str], Callable[[dict, str, Report], None]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_servicemonitor,
    ("cert-manager.io/v1", "Certificate"): check_certificate,
}


# --- schema validation -------------------------------------------------------


def name_of(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"


def validate_documents(docs: Iterable[dict], source: str, versions: list[str], report: Report) -> None:
    for doc in docs:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            report.error(source, "a document without apiVersion and kind")
            continue
        where = f"{source} {name_of(doc)}"
        custom = CUSTOM_KINDS.get((doc["apiVersion"], doc["kind"]))
        if custom is not None:
            custom(doc, where, report)
            report.custom += 1
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
                report.validated += 1
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                report.error(where, f"Kubernetes {e.version}: {path}: {e.message}")
            except kv.SchemaNotFoundError as e:
                report.error(where, f"{e.message} (a typo, or a custom resource missing from CUSTOM_KINDS)")
            except kv.VersionNotSupportedError as e:
                sys.exit(f"validate.py: kubernetes-validate has no schemas for Kubernetes {e.version}")


def load_yaml_documents(text: str, source: str, report: Report) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        report.error(source, f"not valid YAML: {e}")
        return []


# --- kustomization structure -------------------------------------------------


def is_kustomization(path: str) -> bool:
    return os.path.basename(path) in KUSTOMIZATION_FILES


def kustomization_dirs(root: str) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        if any(f in KUSTOMIZATION_FILES for f in files):
            found.append(folder)
    return sorted(found)


def read_kustomization(folder: str) -> dict:
    for name in KUSTOMIZATION_FILES:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return yaml.safe_load(f) or {}
    return {}


def generator_inputs(folder: str) -> set[str]:
    """The files a kustomization's generators turn into ConfigMaps or Secrets."""
    k = read_kustomization(folder)
    return {
        os.path.normpath(os.path.join(folder, ref.split("=", 1)[-1]))
        for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or [])
        for ref in gen.get("files") or []
    }


def check_kustomization(folder: str, report: Report) -> set[str]:
    """Checks that what the kustomization names exists; returns the files it uses."""
    k = read_kustomization(folder)
    where = os.path.join(folder, "kustomization.yaml")
    used: set[str] = set()

    def must_exist(ref: str, what: str, directory_ok: bool) -> None:
        path = os.path.normpath(os.path.join(folder, ref))
        if os.path.isfile(path):
            used.add(path)
        elif directory_ok and os.path.isdir(path):
            if not any(os.path.exists(os.path.join(path, n)) for n in KUSTOMIZATION_FILES):
                report.error(where, f"{what} {ref}: a folder without a kustomization")
        else:
            report.error(where, f"{what} {ref}: no such file")

    for ref in k.get("resources") or []:
        if "://" not in ref:
            must_exist(ref, "resource", directory_ok=True)
    for ref in k.get("components") or []:
        must_exist(ref, "component", directory_ok=True)
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        for ref in gen.get("envs") or []:
            must_exist(ref, "generator env file", directory_ok=False)
        for ref in gen.get("files") or []:
            must_exist(ref.split("=", 1)[-1], "generator file", directory_ok=False)
    for patch in k.get("patches") or []:
        if isinstance(patch, dict) and "path" in patch:
            must_exist(patch["path"], "patch", directory_ok=False)
    return used


# --- rendering and cross-references ------------------------------------------


def kubectl_with_kustomize() -> str | None:
    """kubectl, if it is there and embeds kustomize v5 or later."""
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        return None
    try:
        out = subprocess.run(
            [kubectl, "version", "--client"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Kustomize Version: v(\d+)", out)
    if not match or int(match.group(1)) < MIN_KUSTOMIZE_MAJOR:
        return None
    return kubectl


def pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    """(name, pod template) of every workload in a render."""
    out = []
    for doc in docs:
        if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            out.append((name_of(doc), (doc.get("spec") or {}).get("template") or {}))
    return out


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_references(docs: list[dict], source: str, report: Report) -> None:
    templates = pod_templates(docs)
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc.get("kind", ""), {})[(doc.get("metadata") or {}).get("name", "")] = doc

    def pods_selected(selector: dict) -> list[tuple[str, dict]]:
        return [(n, t) for n, t in templates if labels_match(selector, (t.get("metadata") or {}).get("labels") or {})]

    for doc in docs:
        where = f"{source} {name_of(doc)}"
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "DaemonSet"):
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not labels_match(selector, labels):
                report.error(where, "spec.selector.matchLabels does not match the pod template's labels")
            pod = (spec.get("template") or {}).get("spec") or {}
            for c in pod.get("containers") or []:
                ports = {p.get("name") for p in c.get("ports") or []}
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    for action in ("httpGet", "tcpSocket"):
                        port = ((c.get(probe) or {}).get(action) or {}).get("port")
                        if isinstance(port, str) and port not in ports:
                            report.error(where, f"{c.get('name')}.{probe}: no container port named {port}")
                for ref in c.get("envFrom") or []:
                    name = (ref.get("configMapRef") or {}).get("name")
                    if name and name not in by_kind.get("ConfigMap", {}):
                        report.error(where, f"{c.get('name')}: ConfigMap {name} is not in the render")
            if kind == "StatefulSet" and spec.get("serviceName") not in by_kind.get("Service", {}):
                report.error(where, f"spec.serviceName: no Service {spec.get('serviceName')}")
        elif kind == "Service" and spec.get("selector"):
            selected = pods_selected(spec["selector"])
            if not selected:
                report.error(where, "spec.selector matches no pod template in the render")
            for port in spec.get("ports") or []:
                target = port.get("targetPort")
                if isinstance(target, str):
                    for name, t in selected:
                        names = {p.get("name") for c in (t.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []}
                        if target not in names:
                            report.error(where, f"targetPort {target}: no such port in {name}")
        elif kind in ("PodDisruptionBudget", "NetworkPolicy"):
            key = "selector" if kind == "PodDisruptionBudget" else "podSelector"
            selector = (spec.get(key) or {}).get("matchLabels") or {}
            if not pods_selected(selector):
                report.error(where, f"spec.{key} matches no pod template in the render")
        elif kind == "HorizontalPodAutoscaler":
            target = spec.get("scaleTargetRef") or {}
            if target.get("name") not in by_kind.get(target.get("kind", ""), {}):
                report.error(where, f"scaleTargetRef: no {target.get('kind')}/{target.get('name')} in the render")
        elif kind == "ServiceMonitor":
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            services = [
                s for s in by_kind.get("Service", {}).values()
                if labels_match(selector, (s.get("metadata") or {}).get("labels") or {})
            ]
            for endpoint in spec.get("endpoints") or []:
                port = endpoint.get("port")
                if port and not any(port in {p.get("name") for p in (s.get("spec") or {}).get("ports") or []} for s in services):
                    report.error(where, f"endpoint port {port}: no selected Service has a port of that name")


# --- main --------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder of the manifests (k8s)")
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions",
                        help=f"Kubernetes version(s) to validate against (default: {' '.join(DEFAULT_VERSIONS)})")
    parser.add_argument("--no-render", action="store_true", help="do not render with kubectl kustomize")
    parser.add_argument("--quiet", action="store_true", help="print errors and the summary only")
    args = parser.parse_args()
    versions = args.versions or DEFAULT_VERSIONS
    report = Report(args.quiet)
    root = os.path.normpath(args.root)

    folders = kustomization_dirs(root)
    used: set[str] = set()
    for folder in folders:
        used |= check_kustomization(folder, report)

    manifests = sorted(
        os.path.normpath(os.path.join(folder, f))
        for folder, _, files in os.walk(root)
        for f in files
        if f.endswith((".yaml", ".yml")) and not is_kustomization(f)
    )
    data = set().union(*(generator_inputs(folder) for folder in folders)) if folders else set()
    for path in manifests:
        if path not in used:
            report.error(path, "not listed by any kustomization (forgotten, or a typo in resources:)")
        if path in data:
            continue  # a generator's input (e.g. a policy file): data, not a manifest
        with open(path, encoding="utf-8") as f:
            docs = load_yaml_documents(f.read(), path, report)
        validate_documents(docs, path, versions, report)
    report.info(f"files: {len(manifests)} manifest files, {len(folders)} kustomizations checked")

    kubectl = None if args.no_render else kubectl_with_kustomize()
    if kubectl:
        for folder in folders:
            run = subprocess.run([kubectl, "kustomize", folder], capture_output=True, text=True)
            source = f"kustomize({folder})"
            if run.returncode != 0:
                report.error(source, run.stderr.strip() or "kubectl kustomize failed")
                continue
            docs = load_yaml_documents(run.stdout, source, report)
            validate_documents(docs, source, versions, report)
            check_references(docs, source, report)
            report.info(f"{source}: {len(docs)} objects rendered and checked")
    elif not args.no_render:
        print("NOTE kubectl with kustomize >= v5 not found: validated the manifest files as they are "
              "(generators, patches and cross-references not checked)")

    print(
        f"k8s: {report.validated} schema validations (Kubernetes {', '.join(versions)}, strict), "
        f"{report.custom} custom resources checked structurally, {report.errors} errors"
    )
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
