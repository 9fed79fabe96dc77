//! An agent's metadata as one sorted vector: agents carry a few labels
//! each, and a `BTreeMap` allocates a node with room for eleven entries
//! even for one (about 540 bytes per agent of the view, issue 10).

use std::collections::BTreeMap;

use compact_str::CompactString;

/// Metadata entries, unique keys in key order; lookups by binary search.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(CompactString, CompactString)>);

impl Labels {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&CompactString> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    /// Sets `key` to `value`, replacing what it had.
    pub fn insert(&mut self, key: impl Into<CompactString>, value: impl Into<CompactString>) {
        let (key, value) = (key.into(), value.into());
        match self.position(&key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => {
                self.0.insert(i, (key, value));
                self.0.shrink_to_fit();
            }
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&CompactString, &CompactString)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique; collected to its exact length.
        Self(map.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>, const N: usize> From<[(K, V); N]> for Labels {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K: Into<CompactString>, V: Into<CompactString>> FromIterator<(K, V)> for Labels {
    /// A later entry for a key replaces an earlier one.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let sorted: BTreeMap<CompactString, CompactString> = entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self(sorted.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a CompactString, &'a CompactString);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CompactString, CompactString)>,
        fn(&'a (CompactString, CompactString)) -> (&'a CompactString, &'a CompactString),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for Labels {
    type Item = (CompactString, CompactString);
    type IntoIter = std::vec::IntoIter<(CompactString, CompactString)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_sorted_unique_and_found() {
        let mut labels: Labels = [("b", "2"), ("a", "1"), ("b", "3")].into_iter().collect();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels.get("b").map(CompactString::as_str), Some("3"));
        labels.insert("0", "z");
        labels.insert("a", "x");
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["0", "a", "b"]);
        assert_eq!(labels.get("a").map(CompactString::as_str), Some("x"));
        assert_eq!(labels.get("c"), None);
    }
}
