use super::*;

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Feeds `stream` in the given chunk sizes and returns the prefixes the examiner kept.
fn run(stream: &[u8], chunks: &[usize], want: usize) -> (Vec<Vec<u8>>, Result<(), FrameError>) {
    let mut reader = FrameReader::new(want, 1 << 20);
    let mut seen = Vec::new();
    let mut pos = 0;
    let mut result = Ok(());
    for &c in chunks.iter().cycle() {
        if pos >= stream.len() {
            break;
        }
        let end = (pos + c.max(1)).min(stream.len());
        let mut chunk = &stream[pos..end];
        result = reader.feed(&mut chunk, |h| {
            seen.push(h.prefix.to_vec());
            Step::Done
        });
        pos = end;
    }
    (seen, result)
}

/// What one frame's examiner was shown: (offset, bytes) per range.
type Shown = Vec<(usize, Vec<u8>)>;

/// Feeds `stream` in chunks to a reader whose examiner peeks at `ranges` of every frame
/// (then asks for the frame's end); returns per frame what it was shown, and the forwarded
/// stream.
fn peek_run(
    stream: &[u8],
    chunks: &[usize],
    want: usize,
    ranges: &[(usize, usize)],
    hold: bool,
) -> (Vec<Shown>, Vec<u8>) {
    let mut reader = FrameReader::new(want, 1 << 20);
    reader.set_hold(hold);
    let mut seen: Vec<Shown> = Vec::new();
    let mut forwarded = Vec::new();
    let mut pos = 0;
    for &c in chunks.iter().cycle() {
        if pos >= stream.len() {
            break;
        }
        let end = (pos + c.max(1)).min(stream.len());
        let mut chunk = &stream[pos..end];
        let mut edits = Edits::default();
        reader
            .feed_editing(
                &mut chunk,
                |h| {
                    let next = match h.peek {
                        None => {
                            seen.push(Vec::new());
                            0
                        }
                        Some(p) => {
                            let shown = seen.last_mut().unwrap();
                            shown.push((p.at, p.bytes.to_vec()));
                            if p.bytes.is_empty() && p.at == h.frame_len {
                                return Step::Done;
                            }
                            shown.len()
                        }
                    };
                    match ranges.get(next) {
                        Some(&(at, len)) => Step::Peek { at, len },
                        None => Step::Peek {
                            at: h.frame_len,
                            len: 0,
                        },
                    }
                },
                &mut edits,
            )
            .unwrap();
        let mut src = &stream[pos..end];
        match edits.apply(&mut src) {
            Some((prefix, bytes)) => {
                forwarded.extend_from_slice(&bytes);
                forwarded.extend_from_slice(&stream[pos + prefix..end]);
            }
            None => forwarded.extend_from_slice(&stream[pos..end]),
        }
        pos = end;
    }
    (seen, forwarded)
}

#[test]
fn peeks_show_the_asked_ranges_whatever_the_chunking() {
    let bodies: Vec<Vec<u8>> = [0usize, 3, 40, 300, 5000]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
        .collect();
    let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
    // In the head, across the head's end, far past it, one cut at the frame's end.
    let ranges = [(2, 3), (10, 30), (250, 8), (4990, 50)];
    for want in [1, 8, 64] {
        for chunks in [&[1][..], &[2, 5], &[7], &[64, 3], &[1000], &[stream.len()]] {
            for hold in [false, true] {
                let (seen, forwarded) = peek_run(&stream, chunks, want, &ranges, hold);
                assert_eq!(forwarded, stream, "forwarded unchanged");
                assert_eq!(seen.len(), bodies.len());
                for (body, shown) in bodies.iter().zip(&seen) {
                    let n = body.len();
                    let mut expect: Vec<(usize, Vec<u8>)> = ranges
                        .iter()
                        .take_while(|(at, _)| *at <= n)
                        .map(|&(at, len)| (at, body[at..(at + len).min(n)].to_vec()))
                        .filter(|(at, b)| !b.is_empty() || *at == n)
                        .collect();
                    if expect.last().map(|(at, b)| (*at, b.len())) != Some((n, 0)) {
                        expect.push((n, Vec::new()));
                    }
                    assert_eq!(shown, &expect, "body {n}, want {want}, chunks {chunks:?}");
                }
            }
        }
    }
}

#[test]
fn a_range_out_of_order_ends_the_peeking_and_framing_goes_on() {
    let a: Vec<u8> = (0..100u8).collect();
    let stream: Vec<u8> = [frame(&a), frame(&a)].concat();
    for chunks in [&[1][..], &[9], &[stream.len()]] {
        let (seen, forwarded) = peek_run(&stream, chunks, 4, &[(50, 4), (10, 4)], false);
        assert_eq!(forwarded, stream);
        assert_eq!(seen.len(), 2);
        for shown in &seen {
            assert_eq!(shown, &vec![(50, a[50..54].to_vec())]);
        }
    }
}

#[test]
fn every_split_gives_the_same_frames() {
    let mut stream = frame(b"hello world");
    stream.extend(frame(b""));
    stream.extend(frame(b"abc"));
    stream.extend(frame(&[7u8; 300]));
    let (whole, r) = run(&stream, &[stream.len()], 5);
    assert!(r.is_ok());
    assert_eq!(
        whole,
        vec![b"hello".to_vec(), vec![], b"abc".to_vec(), vec![7u8; 5]]
    );
    for split in 1..stream.len() {
        let (parts, r) = run(&stream, &[split, stream.len()], 5);
        assert!(r.is_ok());
        assert_eq!(parts, whole, "split at {split}");
    }
    for size in 1..8 {
        let (parts, _) = run(&stream, &[size], 5);
        assert_eq!(parts, whole, "chunks of {size}");
    }
}

#[test]
fn examiner_can_ask_for_more() {
    let stream = frame(b"0123456789");
    let mut reader = FrameReader::new(2, 1024);
    let mut lens = Vec::new();
    for b in stream.chunks(1) {
        let mut c = b;
        reader
            .feed(&mut c, |h| {
                lens.push(h.prefix.len());
                if h.prefix.len() < 6 {
                    Step::Need(6)
                } else {
                    Step::Done
                }
            })
            .unwrap();
    }
    assert_eq!(lens, vec![2, 6]);
    assert!(reader.at_boundary());
}

#[test]
fn need_is_capped_at_frame_length() {
    let stream = frame(b"abc");
    let mut reader = FrameReader::new(2, 1024);
    let mut lens = Vec::new();
    reader
        .feed(&mut stream.as_slice(), |h| {
            lens.push((h.prefix.len(), h.last_look()));
            Step::Need(100)
        })
        .unwrap();
    assert_eq!(lens, vec![(2, false), (3, true)]);
    assert!(reader.at_boundary());
}

#[test]
fn oversized_and_negative_sizes_fail_the_stream() {
    let mut reader = FrameReader::new(4, 100);
    let big = 101i32.to_be_bytes();
    assert_eq!(
        reader.feed(&mut big.as_slice(), |_| Step::Done),
        Err(FrameError::Oversized {
            size: 101,
            max: 100
        })
    );
    // Once failed, always failed.
    assert!(reader
        .feed(&mut [0u8; 3].as_slice(), |_| Step::Done)
        .is_err());
    let mut reader = FrameReader::new(4, 100);
    let neg = (-5i32).to_be_bytes();
    assert_eq!(
        reader.feed(&mut neg.as_slice(), |_| Step::Done),
        Err(FrameError::NegativeSize(-5))
    );
}

#[test]
fn skip_within_frame_only_inside_a_body() {
    let stream = frame(&[3u8; 100]);
    let mut reader = FrameReader::new(10, 1024);
    assert!(!reader.skip_within_frame(5));
    reader.feed(&mut &stream[..20], |_| Step::Done).unwrap();
    assert!(reader.skip_within_frame(50));
    // 34 bytes of the frame are left: a chunk going past its end takes the full path, one
    // ending with it does not.
    assert!(!reader.skip_within_frame(35));
    assert!(reader.skip_within_frame(34));
    assert!(reader.at_boundary());
    reader.feed(&mut &stream[..20], |_| Step::Done).unwrap();
    assert!(!reader.skip_within_frame(5_000));
    reader.feed(&mut &stream[20..], |_| Step::Done).unwrap();
    assert!(reader.at_boundary());
}

#[test]
fn large_frames_are_skipped_not_copied() {
    let body = vec![1u8; 1 << 20];
    let stream = frame(&body);
    let mut src = crate::codec::source::CountingSource::new(&stream);
    let mut reader = FrameReader::new(10, 2 << 20);
    reader.feed(&mut src, |_| Step::Done).unwrap();
    assert_eq!(
        src.copied, HEAD_WINDOW,
        "one read of the head window, then skipped"
    );
    assert_eq!(src.reads, 1);
}

/// Feeds `stream` in chunks of the given sizes through a holding reader whose examiner
/// replaces frames starting with `R` by their body reversed and doubled, drops frames
/// starting with `D`, and passes the rest; returns what would be forwarded.
fn run_holding(stream: &[u8], chunks: &[usize]) -> Vec<u8> {
    let mut reader = FrameReader::new(1, 1 << 20);
    reader.set_hold(true);
    let mut out = Vec::new();
    let mut pos = 0;
    for &c in chunks.iter().cycle() {
        if pos >= stream.len() {
            break;
        }
        let end = (pos + c.max(1)).min(stream.len());
        let chunk = &stream[pos..end];
        let mut edits = Edits::default();
        reader
            .feed_editing(
                &mut &chunk[..],
                |h| match (h.prefix.first(), h.collected) {
                    // Look at frames in two steps, like a header parser asking for more.
                    _ if !h.collected && h.prefix.len() < 3 && !h.last_look() => Step::Need(3),
                    (Some(b'R' | b'D'), false) => Step::Collect,
                    (Some(b'R'), true) => Step::Replace(reversed_twice(h.prefix)),
                    // Head-only: `H` + rest becomes `hh` + rest (the frame grows by one).
                    (Some(b'H'), false) => {
                        let mut head = ((h.frame_len + 1) as i32).to_be_bytes().to_vec();
                        head.extend_from_slice(b"hh");
                        head.extend_from_slice(&h.prefix[1..]);
                        Step::ReplaceHead(head)
                    }
                    (Some(b'D'), true) => Step::Replace(Vec::new()),
                    // Discarded as it streams: never collected, replaced by `x`.
                    (Some(b'X'), false) => Step::Discard(frame(b"x")),
                    (Some(b'X'), true) => panic!("a discarded frame was collected"),
                    _ => Step::Done,
                },
                &mut edits,
            )
            .unwrap();
        match edits.apply(&mut &chunk[..]) {
            Some((prefix_len, new_prefix)) => {
                out.extend(new_prefix);
                out.extend_from_slice(&chunk[prefix_len..]);
            }
            None => out.extend_from_slice(chunk),
        }
        pos = end;
    }
    out
}

fn reversed_twice(body: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = body.iter().rev().copied().collect();
    out.extend(out.clone());
    frame(&out)
}

#[test]
fn holding_reader_replaces_whole_frames_under_any_split() {
    let mut stream = frame(b"pass one");
    stream.extend(frame(b"R123456789"));
    stream.extend(frame(b""));
    stream.extend(frame(b"Dropped"));
    stream.extend(frame(&[b'x'; 40]));
    stream.extend(frame(b"Rab"));
    stream.extend(frame(b"Hello, world"));
    stream.extend(frame(b"H"));
    stream.extend(frame(b"Xdropped as it streams, whatever its size"));
    stream.extend(frame(b"X"));
    let mut expected = frame(b"pass one");
    expected.extend(frame(b"987654321R987654321R"));
    expected.extend(frame(b""));
    expected.extend(frame(&[b'x'; 40]));
    expected.extend(frame(b"baRbaR"));
    expected.extend(frame(b"hhello, world"));
    expected.extend(frame(b"hh"));
    expected.extend(frame(b"x"));
    expected.extend(frame(b"x"));
    assert_eq!(run_holding(&stream, &[stream.len()]), expected);
    for split in 1..stream.len() {
        assert_eq!(
            run_holding(&stream, &[split, stream.len()]),
            expected,
            "split at {split}"
        );
    }
    for size in 1..12 {
        assert_eq!(run_holding(&stream, &[size]), expected, "chunks of {size}");
    }
}

#[test]
fn a_large_held_frame_is_not_kept_after_it_is_decided() {
    for last in [&b"Rreplaced"[..], b"Dropped", b"passed"] {
        let mut body = last.to_vec();
        body.resize(200_000, b'x');
        let stream = frame(&body);
        let mut reader = FrameReader::new(1, 1 << 20);
        reader.set_hold(true);
        for chunk in stream.chunks(16 * 1024) {
            let mut edits = Edits::default();
            reader
                .feed_editing(
                    &mut &chunk[..],
                    |h| match (h.prefix.first(), h.collected) {
                        (Some(b'R' | b'D'), false) => Step::Collect,
                        (Some(b'R'), true) => Step::Replace(frame(b"small")),
                        (Some(b'D'), true) => Step::Replace(Vec::new()),
                        // Asks for the whole frame before letting it pass.
                        (_, false) if h.prefix.len() < h.frame_len => Step::Need(h.frame_len),
                        _ => Step::Done,
                    },
                    &mut edits,
                )
                .unwrap();
        }
        assert!(reader.at_boundary());
        assert!(
            reader.head.capacity() <= RETAINED_HEAD_BYTES,
            "{} bytes kept after a {}-byte frame starting {:?}",
            reader.head.capacity(),
            stream.len(),
            last.first().map(|b| *b as char)
        );
    }
}

#[test]
fn holding_reader_forwards_passed_frames_without_edits() {
    let mut stream = frame(b"abc");
    stream.extend(frame(&[1u8; 100]));
    let mut reader = FrameReader::new(2, 1024);
    reader.set_hold(true);
    let mut edits = Edits::default();
    reader
        .feed_editing(&mut stream.as_slice(), |_| Step::Done, &mut edits)
        .unwrap();
    assert!(edits.is_empty());
    // A header split across chunks is held, then given back once decided.
    let mut edits = Edits::default();
    reader
        .feed_editing(&mut &stream[..5], |_| Step::Done, &mut edits)
        .unwrap();
    assert_eq!(edits.ops, vec![Edit::Drop { from: 0, to: 5 }]);
    let mut edits = Edits::default();
    reader
        .feed_editing(&mut &stream[5..], |_| Step::Done, &mut edits)
        .unwrap();
    assert_eq!(
        edits.ops,
        vec![Edit::Insert {
            at: 0,
            bytes: stream[..5].to_vec()
        }]
    );
}

/// A head replaced, then the rest of the original frame peeked: the stream forwarded has the
/// new head and the rest unchanged, and the peeks show the original bytes at their original
/// offsets, whatever the chunking.
#[test]
fn a_replaced_head_is_followed_by_peeks_at_the_original_frame() {
    let bodies: Vec<Vec<u8>> = [1usize, 4, 9, 40, 300]
        .iter()
        .map(|&n| {
            let mut b = vec![b'H'];
            b.extend((1..n).map(|i| (i * 3 + n) as u8));
            b
        })
        .collect();
    let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
    let expected: Vec<u8> = bodies
        .iter()
        .flat_map(|b| {
            let mut new = b"hh".to_vec();
            new.extend_from_slice(&b[1..]);
            frame(&new)
        })
        .collect();
    for chunks in [&[1][..], &[2, 5], &[7], &[64, 3], &[stream.len()]] {
        let mut reader = FrameReader::new(4, 1 << 20);
        reader.set_hold(true);
        let mut seen: Vec<Shown> = Vec::new();
        let mut forwarded = Vec::new();
        let mut pos = 0;
        for &c in chunks.iter().cycle() {
            if pos >= stream.len() {
                break;
            }
            let end = (pos + c.max(1)).min(stream.len());
            let mut edits = Edits::default();
            reader
                .feed_editing(
                    &mut &stream[pos..end],
                    |h| match h.peek {
                        None if h.prefix.len() < 4 && !h.last_look() => Step::Need(4),
                        None => {
                            seen.push(Vec::new());
                            let mut head = ((h.frame_len + 1) as i32).to_be_bytes().to_vec();
                            head.extend_from_slice(b"hh");
                            head.extend_from_slice(&h.prefix[1..]);
                            Step::ReplaceHeadPeek {
                                head,
                                at: h.prefix.len() + 2,
                                len: 5,
                            }
                        }
                        Some(p) => {
                            seen.last_mut().unwrap().push((p.at, p.bytes.to_vec()));
                            Step::Peek {
                                at: p.at + 10,
                                len: 5,
                            }
                        }
                    },
                    &mut edits,
                )
                .unwrap();
            match edits.apply(&mut &stream[pos..end]) {
                Some((prefix, bytes)) => {
                    forwarded.extend_from_slice(&bytes);
                    forwarded.extend_from_slice(&stream[pos + prefix..end]);
                }
                None => forwarded.extend_from_slice(&stream[pos..end]),
            }
            pos = end;
        }
        assert_eq!(forwarded, expected, "chunks {chunks:?}");
        assert_eq!(seen.len(), bodies.len());
        for (body, shown) in bodies.iter().zip(&seen) {
            let n = body.len();
            let head = n.min(4);
            let mut expect = Vec::new();
            let mut at = head + 2;
            // Every range up to the frame's end, then the end itself (once).
            while at < n {
                expect.push((at, body[at..(at + 5).min(n)].to_vec()));
                at += 10;
            }
            if expect.last().map(|(a, b)| (*a, b.len())) != Some((n, 0)) {
                expect.push((n, Vec::new()));
            }
            assert_eq!(shown, &expect, "body {n}, chunks {chunks:?}");
        }
    }
}
