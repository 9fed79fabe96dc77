//! Properties over arbitrary input: validation never panics, and accepts
//! exactly what BEHAVIOUR.md §2 accepts (each oracle is §2's rule written
//! out independently of `validate.rs`).

use std::collections::HashMap;

use proptest::{collection, prelude::*};

use super::*;

/// Text of the kinds §2 cares about: short and long, with control
/// characters (C0, DEL, C1) and multi-byte characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => proptest::char::range('\u{0}', '\u{1f}'),
            1 => Just('\u{7f}'),
            1 => Just('\u{85}'),
            1 => Just('é'),
            1 => Just('界'),
        ],
        0..max,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn clean(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

/// Values of lengths around the 1024-byte bound, and short text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![text(12), (1020usize..1030).prop_map(|n| "v".repeat(n))]
}

/// Entries of lengths around the 128-byte bound, and short text.
fn entry() -> impl Strategy<Value = String> {
    prop_oneof![3 => text(12), 1 => (125usize..132).prop_map(|n| "k".repeat(n)), 1 => Just(String::new())]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn labels_accept_short_clean_text_only(s in text(140)) {
        let ok = s.len() <= 128 && clean(&s);
        let got = label("namespace", s.clone(), "default");
        prop_assert_eq!(got.is_ok(), ok);
        if ok {
            let want = if s.is_empty() { "default".to_owned() } else { s };
            prop_assert_eq!(got.unwrap(), want);
        }
    }

    #[test]
    fn capabilities_accept_what_section_2_accepts(
        caps in collection::vec(entry(), 0..70),
        required in any::<bool>(),
    ) {
        let each_ok = caps.iter().all(|c| !c.is_empty() && c.len() <= 128 && clean(c));
        let mut distinct: Vec<String> = Vec::new();
        for c in &caps {
            if !distinct.contains(c) {
                distinct.push(c.clone());
            }
        }
        let ok = each_ok && distinct.len() <= 64 && !(required && distinct.is_empty());
        let got = capabilities(caps, required);
        prop_assert_eq!(got.is_ok(), ok);
        if ok {
            prop_assert_eq!(got.unwrap(), distinct);
        }
    }

    #[test]
    fn metadata_accepts_what_section_2_accepts(
        entries in collection::hash_map(entry(), value(), 0..70),
    ) {
        let ok = entries.len() <= 64
            && entries.iter().all(|(k, v)| !k.is_empty() && k.len() <= 128 && v.len() <= 1024);
        let got = metadata("metadata", entries.clone());
        prop_assert_eq!(got.is_ok(), ok);
        if ok {
            prop_assert_eq!(got.unwrap().len(), entries.len());
        }
    }

    #[test]
    fn filter_keys_are_short_clean_and_non_empty(key in prop_oneof![entry(), text(135)]) {
        let ok = !key.is_empty() && key.len() <= 128 && clean(&key);
        prop_assert_eq!(filter_key(&key).is_ok(), ok);
    }

    #[test]
    fn page_sizes_and_max_results_follow_section_2(n in any::<i32>()) {
        match page_size(n) {
            Err(_) => prop_assert!(n < 0),
            Ok(None) => prop_assert_eq!(n, 0),
            Ok(Some(size)) => {
                prop_assert!(n > 0);
                prop_assert_eq!(size, usize::try_from(n).unwrap().min(10_000));
            }
        }
        match max_results(n) {
            Err(_) => prop_assert!(n < 0),
            Ok(m) if n == 0 => prop_assert_eq!(m, 5),
            Ok(m) => prop_assert_eq!(m, usize::try_from(n).unwrap().min(1000)),
        }
    }

    #[test]
    fn agent_ids_parse_every_standard_form_and_nothing_panics(
        bytes in any::<[u8; 16]>(),
        junk in text(40),
    ) {
        let id = uuid::Uuid::from_bytes(bytes);
        for form in [
            id.hyphenated().to_string(),
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            id.hyphenated().to_string().to_uppercase(),
        ] {
            let parsed = agent_id("agent_id", &form).ok();
            prop_assert_eq!(parsed, Some(AgentId::from_bytes(bytes)), "{}", form);
        }
        let _ = agent_id("agent_id", &junk);
    }

    #[test]
    fn no_validator_panics_on_any_text(s in text(300)) {
        let _ = endpoint(s.clone());
        let _ = notification_type(s.clone());
        let _ = message(s.clone());
        let _ = after_notification_id(&s);
        let _ = agent_type_filter(&s);
        let _ = status_filter(&s);
        let _ = metadata("filters", HashMap::from([(s.clone(), s)]));
    }
}
