//! Which of a connection's deltas go out together, and the `deltas` frame that carries
//! them.
//!
//! API Gateway bills a post per started 32 KB of frame, so a burst sent one `delta` frame
//! each costs one message per delta even when the deltas are a few hundred bytes. A
//! subscription made with `coalesce` (docs/protocol.md) gets its channel's deltas packed
//! into `{"type":"deltas","channel":C,"deltas":[...]}` frames instead, each element the
//! object of a `delta` frame without `type`. A frame holds only deltas of one channel and
//! one epoch whose seqs follow one another, in seq order, and is at most
//! [`MAX_FRAME_BYTES`] long; each frame is filled before the next is started, which for
//! deltas that must stay in order gives the fewest frames.
//!
//! A group of one delta goes out as the plain `delta` frame, exactly as to a v1 client:
//! a quiet channel's frames are the same for everyone, and a delta too large to share a
//! frame (its frame alone over the limit) is sent alone, as it always was. Subscriptions
//! without `coalesce` get one group per delta, so nothing changes for them.
//!
//! Everything here is pure (sizes in, groups out) so the limit and the boundaries are
//! tested without I/O; the handler posts the frames.

use std::ops::Range;

/// The most bytes a `deltas` frame may hold: API Gateway's 32 KB billing unit.
pub const MAX_FRAME_BYTES: usize = 32_768;

/// One delta of a connection's share of the batch, as the grouping sees it.
#[derive(Clone, Copy, Debug)]
pub struct Part<'a> {
    /// Its channel.
    pub channel: &'a str,
    /// Its epoch.
    pub epoch: &'a str,
    /// Its seq.
    pub seq: u64,
    /// The length in bytes of its JSON object (its element in a `deltas` frame).
    pub element_bytes: usize,
    /// Whether the subscription it goes to asked for `coalesce`.
    pub coalesce: bool,
}

/// Splits `parts` (in the order they are to be delivered) into the frames they go out
/// in: ranges of `parts`, in order, covering each part once. A range of several parts is
/// one `deltas` frame of at most `max_frame_bytes`; a range of one is a `delta` frame.
pub fn group(parts: &[Part<'_>], max_frame_bytes: usize) -> Vec<Range<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < parts.len() {
        let first = parts[start];
        let mut end = start + 1;
        if first.coalesce {
            let mut bytes = frame_bytes(first.channel, [first.element_bytes]);
            while let Some(next) = parts.get(end) {
                let follows = next.coalesce
                    && next.channel == first.channel
                    && next.epoch == first.epoch
                    && next.seq == parts[end - 1].seq + 1;
                // One comma before each element after the first.
                let with_next = bytes + 1 + next.element_bytes;
                if !follows || with_next > max_frame_bytes {
                    break;
                }
                bytes = with_next;
                end += 1;
            }
        }
        groups.push(start..end);
        start = end;
    }
    groups
}

/// The length in bytes of the `deltas` frame on `channel` whose elements are
/// `element_bytes` long: what [`deltas_frame`] builds, without building it.
pub fn frame_bytes(channel: &str, element_bytes: impl IntoIterator<Item = usize>) -> usize {
    let (count, total) = element_bytes
        .into_iter()
        .fold((0usize, 0), |(count, total), bytes| {
            (count + 1, total + bytes)
        });
    header(channel).len() + total + count.saturating_sub(1) + FOOTER.len()
}

/// The `deltas` frame on `channel` carrying `elements` (each a delta's JSON object), in
/// the order given: the text of `ServerMessage::Deltas`, built from the elements already
/// serialised (and measured).
pub fn deltas_frame<'a>(channel: &str, elements: impl IntoIterator<Item = &'a str>) -> String {
    let mut frame = header(channel);
    for (n, element) in elements.into_iter().enumerate() {
        if n > 0 {
            frame.push(',');
        }
        frame.push_str(element);
    }
    frame.push_str(FOOTER);
    frame
}

/// What a `deltas` frame ends with.
const FOOTER: &str = "]}";

/// What a `deltas` frame on `channel` starts with, up to its first element.
fn header(channel: &str) -> String {
    let channel = serde_json::to_string(channel).expect("a string always serialises");
    format!(r#"{{"type":"deltas","channel":{channel},"deltas":["#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast::protocol::{Delta, Payload, ServerMessage};

    fn delta(epoch: &str, seq: u64, data_bytes: usize) -> Delta {
        Delta {
            channel: "chat:lobby".into(),
            seq,
            epoch: epoch.into(),
            id: format!("m{seq}"),
            from: "alice".into(),
            ts: 1_700_000_000_000,
            data: Payload::from_json(format!("\"{}\"", "x".repeat(data_bytes))).unwrap(),
        }
    }

    fn element(delta: &Delta) -> String {
        serde_json::to_string(delta).unwrap()
    }

    /// Parts of coalescing subscriptions on `chat:lobby`, epoch `e`, seqs from 1, each
    /// element `bytes` long.
    fn parts(sizes: &[usize]) -> Vec<Part<'static>> {
        sizes
            .iter()
            .zip(1..)
            .map(|(&element_bytes, seq)| Part {
                channel: "chat:lobby",
                epoch: "e",
                seq,
                element_bytes,
                coalesce: true,
            })
            .collect()
    }

    #[test]
    fn the_frame_is_the_deltas_server_message_and_its_length_is_computed_exactly() {
        let deltas = [delta("e", 1, 10), delta("e", 2, 0), delta("e", 3, 300)];
        let elements: Vec<String> = deltas.iter().map(element).collect();
        let frame = deltas_frame("chat:lobby", elements.iter().map(String::as_str));
        let expected = ServerMessage::Deltas {
            channel: "chat:lobby",
            deltas: &deltas,
        }
        .to_json();
        assert_eq!(frame, expected);
        assert_eq!(
            frame_bytes("chat:lobby", elements.iter().map(String::len)),
            frame.len()
        );
        // Each element is the delta frame's object without `type`.
        assert_eq!(
            deltas[0].to_frame().replacen(r#""type":"delta","#, "", 1),
            elements[0]
        );
        let one = deltas_frame("chat:lobby", [elements[0].as_str()]);
        assert_eq!(frame_bytes("chat:lobby", [elements[0].len()]), one.len());
    }

    #[test]
    fn consecutive_deltas_share_frames_of_at_most_32768_bytes() {
        // Two elements that fill a frame to the byte: one frame.
        let rest = MAX_FRAME_BYTES - frame_bytes("chat:lobby", [0, 1000]);
        assert_eq!(frame_bytes("chat:lobby", [rest, 1000]), MAX_FRAME_BYTES);
        assert_eq!(group(&parts(&[rest, 1000]), MAX_FRAME_BYTES), vec![0..2]);
        // One byte more: two frames.
        assert_eq!(
            group(&parts(&[rest + 1, 1000]), MAX_FRAME_BYTES),
            [0..1, 1..2]
        );
        // 100 deltas of 300 bytes: as few frames as the limit allows, each full.
        let sizes = vec![300; 100];
        let groups = group(&parts(&sizes), MAX_FRAME_BYTES);
        let per_frame = (MAX_FRAME_BYTES - frame_bytes("chat:lobby", [0]) + 1) / 301;
        assert_eq!(groups.len(), 100usize.div_ceil(per_frame), "{groups:?}");
        for range in &groups {
            let bytes = frame_bytes("chat:lobby", sizes[range.clone()].iter().copied());
            assert!(bytes <= MAX_FRAME_BYTES, "{range:?}: {bytes}");
        }
        assert!(
            groups[..groups.len() - 1]
                .iter()
                .all(|r| r.len() == per_frame)
        );
    }

    #[test]
    fn groups_cover_every_delta_once_in_order() {
        let sizes: Vec<usize> = (0..200).map(|n| 100 + (n * 7919) % 9000).collect();
        let groups = group(&parts(&sizes), MAX_FRAME_BYTES);
        let covered: Vec<usize> = groups.iter().flat_map(Clone::clone).collect();
        assert_eq!(covered, (0..200).collect::<Vec<_>>());
        for range in &groups {
            assert!(
                frame_bytes("chat:lobby", sizes[range.clone()].iter().copied()) <= MAX_FRAME_BYTES
            );
        }
        // Greedy: no frame could have taken the next delta too.
        for pair in groups.windows(2) {
            let grown = pair[0].start..pair[1].start + 1;
            assert!(frame_bytes("chat:lobby", sizes[grown].iter().copied()) > MAX_FRAME_BYTES);
        }
    }

    #[test]
    fn a_delta_too_large_to_share_goes_alone() {
        let groups = group(&parts(&[100, 40_000, 100, 100]), MAX_FRAME_BYTES);
        assert_eq!(groups, [0..1, 1..2, 2..4]);
    }

    #[test]
    fn a_frame_never_spans_an_epoch_a_channel_or_a_seq_gap() {
        let mut all = parts(&[10; 8]);
        // seqs 1, 2 of epoch e; 1, 2 of epoch f; 5, 6 (a gap); 7 on another channel; 8.
        for (part, epoch) in all.iter_mut().zip(["e", "e", "f", "f", "f", "f", "f", "f"]) {
            part.epoch = epoch;
        }
        for (part, seq) in all.iter_mut().zip([1, 2, 1, 2, 5, 6, 7, 8]) {
            part.seq = seq;
        }
        all[6].channel = "news";
        assert_eq!(group(&all, MAX_FRAME_BYTES), [0..2, 2..4, 4..6, 6..7, 7..8]);
    }

    #[test]
    fn subscriptions_without_coalesce_get_one_frame_per_delta() {
        let mut all = parts(&[10; 6]);
        all[2].coalesce = false;
        all[3].coalesce = false;
        assert_eq!(
            group(&all, MAX_FRAME_BYTES),
            [0..2, 2..3, 3..4, 4..6],
            "v1 parts alone, coalescing ones on either side grouped"
        );
        for part in &mut all {
            part.coalesce = false;
        }
        assert_eq!(group(&all, MAX_FRAME_BYTES).len(), 6);
        assert!(group(&[], MAX_FRAME_BYTES).is_empty());
    }
}
