//! What a name or affix in a rule must look like: Kafka's own limits, so that a rule that
//! could never work stops the configuration, not the traffic.

use crate::topics::mapping::NameKind;

/// Kafka's limit on topic name length.
const MAX_TOPIC_LEN: usize = 249;
/// Group and transactional ids have no broker-side limit; this only keeps them sane.
const MAX_ID_LEN: usize = 255;

pub(super) fn check_name(kind: NameKind, n: &str) -> Result<(), String> {
    match kind {
        NameKind::Topic => {
            if n.is_empty() || n.len() > MAX_TOPIC_LEN {
                return Err(format!(
                    "topic name `{n}` must be 1 to {MAX_TOPIC_LEN} characters"
                ));
            }
            if n == "." || n == ".." {
                return Err(format!("`{n}` is not a valid topic name"));
            }
            if let Some(c) = n
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(format!(
                    "topic name `{n}` contains `{c}`: Kafka allows ASCII letters, digits, `.`, `_` and `-`"
                ));
            }
        }
        NameKind::Group | NameKind::TransactionalId => {
            if n.is_empty() || n.len() > MAX_ID_LEN {
                return Err(format!("id `{n}` must be 1 to {MAX_ID_LEN} bytes"));
            }
            if n.chars().any(char::is_control) {
                return Err(format!("id `{n}` contains a control character"));
            }
        }
    }
    Ok(())
}

pub(super) fn check_affix(kind: NameKind, field: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    match kind {
        // The affix alone must be a valid name fragment, short enough to leave room for a name.
        NameKind::Topic if s.len() >= MAX_TOPIC_LEN => Err(format!("`{field}` is too long")),
        _ => check_name(kind, s).map_err(|e| format!("`{field}`: {e}")),
    }
}
