use super::*;

fn req(id: i32) -> Inflight {
    Inflight {
        correlation_id: id,
        api_key: 0,
        api: None,
        api_version: 9,
        sent_at_ns: id as u64,
        request_bytes: 20,
        plan: Plan::default(),
        facts: None,
        response_head: Default::default(),
        answer_optional: false,
    }
}

fn matched(a: Answer) -> Matched {
    match a {
        Answer::Request(m) => m,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn in_order_and_skipped() {
    let mut t = InflightTable::new(10);
    for id in 1..=4 {
        assert!(t.push(req(id)).is_none());
    }
    assert!(matched(t.take(1)).skipped.is_empty());
    let m = matched(t.take(3));
    assert_eq!(m.request.correlation_id, 3);
    assert_eq!(
        m.skipped
            .iter()
            .map(|s| s.correlation_id)
            .collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(t.take(99), Answer::Nothing);
    assert_eq!(t.len(), 1);
}

#[test]
fn bounded() {
    let mut t = InflightTable::new(2);
    assert!(t.push(req(1)).is_none());
    assert!(t.push(req(2)).is_none());
    assert_eq!(t.check(3, true), Err(Ambiguous::Full));
    // acks=0 requests wait for no answer: a full table still takes them.
    assert_eq!(t.check(3, false), Ok(()));
    assert_eq!(t.push(req(3)), Some(req(1)));
    assert_eq!(t.take(1), Answer::Nothing);
    assert_eq!(t.len(), 2);
}

#[test]
fn an_id_still_waiting_is_a_duplicate() {
    let mut t = InflightTable::new(10);
    t.push(req(5));
    assert_eq!(t.check(5, true), Err(Ambiguous::Duplicate));
    assert_eq!(t.check(5, false), Err(Ambiguous::Duplicate));
    t.push_acks0(6);
    assert_eq!(t.check(6, true), Err(Ambiguous::Duplicate));
    assert_eq!(t.check(7, true), Ok(()));
    matched(t.take(5));
    // The acks=0 Produce sent after it may still be answered.
    assert_eq!(t.check(6, true), Err(Ambiguous::Duplicate));
    assert_eq!(t.check(5, true), Ok(()));
}

#[test]
fn an_answered_acks0_produce_is_recognised() {
    let mut t = InflightTable::new(10);
    t.push_acks0(1);
    t.push(req(2));
    assert_eq!(t.take(1), Answer::Acks0);
    assert!(matched(t.take(2)).skipped.is_empty());
    assert_eq!(t.check(1, true), Ok(()));
}

#[test]
fn a_later_answer_ends_acks0_entries_before_it() {
    let mut t = InflightTable::new(10);
    t.push_acks0(1);
    t.push_acks0(2);
    t.push(req(3));
    t.push_acks0(4);
    assert!(matched(t.take(3)).skipped.is_empty());
    // 1 and 2 were passed over (Kafka never answers them): their ids are free again.
    assert_eq!(t.check(1, true), Ok(()));
    assert_eq!(t.check(2, true), Ok(()));
    assert_eq!(t.check(4, true), Err(Ambiguous::Duplicate));
    assert_eq!(t.take(1), Answer::Nothing);
}

#[test]
fn an_acks0_answer_before_an_older_request_leaves_it_waiting() {
    let mut t = InflightTable::new(10);
    t.push(req(1));
    t.push_acks0(2);
    assert_eq!(t.take(2), Answer::Acks0);
    assert_eq!(matched(t.take(1)).request.correlation_id, 1);
}

#[test]
fn forgotten_acks0_ids_stay_taken_until_a_later_answer() {
    let mut t = InflightTable::new(10);
    for id in 0..(ACKS0_KEPT as i32 + 100) {
        t.push_acks0(id);
    }
    // Folded into one range, still recognised and still taken.
    assert_eq!(t.forgotten.ranges.len(), 1);
    assert_eq!(t.check(3, true), Err(Ambiguous::Duplicate));
    assert_eq!(t.take(3), Answer::Acks0);
    t.push(req(100_000));
    matched(t.take(100_000));
    assert_eq!(t.check(3, true), Ok(()));
    assert_eq!(t.take(3), Answer::Nothing);
}

#[test]
fn scattered_forgotten_ids_merge_their_closest_ranges() {
    // Ids with gaps (a client numbering requests across its connections): every one stays
    // taken and recognised, in a bounded number of ranges.
    let mut t = InflightTable::new(10);
    let ids: Vec<i32> = (0..(ACKS0_KEPT + 3 * FORGOTTEN_RANGES) as i32)
        .map(|i| i * 10)
        .collect();
    for &id in &ids {
        t.push_acks0(id);
    }
    assert!(t.forgotten.ranges.len() <= FORGOTTEN_RANGES);
    for &id in &ids {
        assert_eq!(t.check(id, true), Err(Ambiguous::Duplicate), "{id}");
    }
    assert_eq!(t.take(20), Answer::Acks0);
}

#[test]
fn observing_connections_may_hold_duplicates() {
    let mut t = InflightTable::new(10);
    t.push(req(1));
    t.push(req(1));
    matched(t.take(1));
    assert_eq!(t.check(1, true), Err(Ambiguous::Duplicate));
    matched(t.take(1));
    assert_eq!(t.check(1, true), Ok(()));
}
