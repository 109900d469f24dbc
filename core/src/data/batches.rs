//! The order of examples in an epoch: seeded shuffles, optionally grouped by length so a
//! batch pads little (`bucket_by_length`).

use crate::rng::SeededRng;

/// Which examples form each batch of one epoch.
pub type BatchOrder = Vec<Vec<usize>>;

/// Batches for `epoch`, a pure function of `(seed, epoch)` so a resumed run replays the
/// same order. With `lengths`, examples are sorted by length inside windows of 50 batches
/// and the batches then shuffled: little padding, still random.
pub fn batch_order(n: usize, batch_size: usize, seed: u64, epoch: usize, lengths: Option<&[usize]>) -> BatchOrder {
    let mut rng = SeededRng::new(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(epoch as u64 + 1)));
    let mut idx: Vec<usize> = (0..n).collect();
    shuffle(&mut idx, &mut rng);
    let bs = batch_size.max(1);
    let mut batches: BatchOrder = match lengths {
        None => idx.chunks(bs).map(|c| c.to_vec()).collect(),
        Some(len) => {
            let mut out = Vec::new();
            for window in idx.chunks(bs * 50) {
                let mut w = window.to_vec();
                w.sort_by_key(|&i| len[i]);
                out.extend(w.chunks(bs).map(|c| c.to_vec()));
            }
            out
        }
    };
    if lengths.is_some() {
        shuffle(&mut batches, &mut rng);
    }
    batches
}

/// Fisher–Yates with the seeded generator.
fn shuffle<T>(v: &mut [T], rng: &mut SeededRng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_seeded_permutations() {
        let a = batch_order(100, 32, 1, 0, None);
        assert_eq!(a, batch_order(100, 32, 1, 0, None));
        assert_ne!(a, batch_order(100, 32, 1, 1, None));
        let mut all: Vec<usize> = a.concat();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(a.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![32, 32, 32, 4]);
    }

    #[test]
    fn buckets_reduce_padding() {
        let lengths: Vec<usize> = (0..3200).map(|i| 5 + (i * 7919) % 60).collect();
        let pad = |o: &BatchOrder| -> usize {
            o.iter().map(|b| {
                let m = b.iter().map(|&i| lengths[i]).max().unwrap();
                b.iter().map(|&i| m - lengths[i]).sum::<usize>()
            }).sum()
        };
        let plain = pad(&batch_order(3200, 32, 7, 0, None));
        let bucketed = pad(&batch_order(3200, 32, 7, 0, Some(&lengths)));
        assert!(bucketed * 5 < plain, "{bucketed} vs {plain}");
    }
}
