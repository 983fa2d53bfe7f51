//! The one percentile the bench reports everywhere: nearest rank, on sorted samples.

/// The nearest-rank percentile `fraction` (0 to 1) of `sorted`; `None` when it is empty
/// (each figure says what an empty run reports).
pub fn nearest_rank<T: Copy>(sorted: &[T], fraction: f64) -> Option<T> {
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    (!sorted.is_empty()).then(|| sorted[rank.clamp(1, sorted.len()) - 1])
}
