//! Values as metric labels: stats tags cut names at dots, and Prometheus wants short, plain
//! label values.

/// Longest label value kept: client ids may be 32 KiB.
const MAX_LABEL_CHARS: usize = 64;

/// `[A-Za-z0-9_-]` kept, anything else `_`, at most 64 characters. Two values that differ only
/// in the characters replaced share a label.
pub fn metric_label(value: &str) -> String {
    label_keeping(value, |_| false)
}

/// A client software version as a label: dots are kept (`2.3.0`), since the version is the last
/// labelled segment of its name and its stats tag reads up to the metric's own name.
pub fn software_version_label(value: &str) -> String {
    label_keeping(value, |c| c == '.')
}

/// A topic name as a label: Kafka's legal characters `[A-Za-z0-9._-]` kept (dots too: the
/// topic is the last labelled segment of its series' names), at most 249 (Kafka's longest).
pub fn topic_label(value: &str) -> String {
    label_keeping_up_to(value, 249, |c| c == '.')
}

fn label_keeping(value: &str, also: impl Fn(char) -> bool) -> String {
    label_keeping_up_to(value, MAX_LABEL_CHARS, also)
}

fn label_keeping_up_to(value: &str, max: usize, also: impl Fn(char) -> bool) -> String {
    let label: String = value
        .chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || also(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if label.is_empty() {
        "_".to_string()
    } else {
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_plain_and_short() {
        assert_eq!(metric_label("app-1_x"), "app-1_x");
        assert_eq!(
            metric_label("spiffe://cluster.local/ns/a"),
            "spiffe___cluster_local_ns_a"
        );
        assert_eq!(metric_label(&"é".repeat(100)).len(), 64);
        assert_eq!(metric_label(""), "_");
        assert_eq!(software_version_label("2.3.0-RC1"), "2.3.0-RC1");
        assert_eq!(software_version_label("1 2"), "1_2");
    }
}
