//! Which token positions an intervention edits, as pyreft writes them:
//! `all`, `f<k>` (first k non-pad tokens), `l<k>` (last k), `f<k>+l<k>` (both; overlaps count once).
//! The result is a `[batch, seq]` 0/1 mask, so padded batches and static export graphs both work.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Positions {
    #[default]
    All,
    /// First `first` and last `last` non-pad tokens (either may be 0, not both).
    Ends { first: usize, last: usize },
}

impl FromStr for Positions {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Other(format!(
                "positions `{s}`: expected `all`, `f<k>`, `l<k>` or `f<k>+l<k>` (e.g. `f1+l1`)"
            ))
        };
        let t = s.trim();
        if t == "all" {
            return Ok(Positions::All);
        }
        let (mut first, mut last) = (None, None);
        for part in t.split('+') {
            let part = part.trim();
            let (slot, digits) = match part.chars().next() {
                Some('f') => (&mut first, &part[1..]),
                Some('l') => (&mut last, &part[1..]),
                _ => return Err(bad()),
            };
            if slot.is_some() || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            *slot = Some(digits.parse::<usize>().map_err(|_| bad())?);
        }
        let (first, last) = (first.unwrap_or(0), last.unwrap_or(0));
        if first == 0 && last == 0 {
            return Err(bad());
        }
        Ok(Positions::Ends { first, last })
    }
}

impl fmt::Display for Positions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Positions::All => write!(f, "all"),
            Positions::Ends { first, last: 0 } => write!(f, "f{first}"),
            Positions::Ends { first: 0, last } => write!(f, "l{last}"),
            Positions::Ends { first, last } => write!(f, "f{first}+l{last}"),
        }
    }
}

impl Positions {
    /// The edit mask for one batch from its attention mask rows (1 = real token).
    /// Works for left or right padding: "first"/"last" count over the real tokens of each row.
    pub fn mask_rows(&self, attention: &[Vec<u32>]) -> Vec<Vec<f32>> {
        attention
            .iter()
            .map(|row| {
                let real: Vec<usize> = (0..row.len()).filter(|&i| row[i] != 0).collect();
                let mut out = vec![0f32; row.len()];
                match *self {
                    Positions::All => real.iter().for_each(|&i| out[i] = 1.0),
                    Positions::Ends { first, last } => {
                        real.iter().take(first).for_each(|&i| out[i] = 1.0);
                        real.iter().rev().take(last).for_each(|&i| out[i] = 1.0);
                    }
                }
                out
            })
            .collect()
    }

    /// [`Self::mask_rows`] as a `[batch, seq]` f32 tensor on `device`.
    pub fn mask(&self, attention: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let rows = self.mask_rows(attention);
        let (b, s) = (rows.len(), rows.first().map_or(0, |r| r.len()));
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        Ok(Tensor::from_vec(flat, (b, s), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        for s in ["all", "f1", "l3", "f1+l1", "f2+l5"] {
            assert_eq!(s.parse::<Positions>().unwrap().to_string(), s);
        }
        assert_eq!("l2+f1".parse::<Positions>().unwrap().to_string(), "f1+l2");
        for bad in ["", "f", "f0", "x1", "f1+f2", "f-1", "first", "f1+", "l1 l2"] {
            assert!(bad.parse::<Positions>().is_err(), "{bad}");
        }
    }

    #[test]
    fn masks_count_real_tokens_only() {
        let att = vec![vec![1, 1, 1, 1, 0, 0], vec![1, 1, 0, 0, 0, 0], vec![0, 0, 1, 1, 1, 1]];
        let m = "f1+l1".parse::<Positions>().unwrap().mask_rows(&att);
        assert_eq!(m[0], vec![1., 0., 0., 1., 0., 0.]);
        assert_eq!(m[1], vec![1., 1., 0., 0., 0., 0.]);
        assert_eq!(m[2], vec![0., 0., 1., 0., 0., 1.]); // left padding
        let m = "l3".parse::<Positions>().unwrap().mask_rows(&att);
        assert_eq!(m[1], vec![1., 1., 0., 0., 0., 0.]); // fewer tokens than k: all of them
        let m = Positions::All.mask_rows(&att);
        assert_eq!(m[2], vec![0., 0., 1., 1., 1., 1.]);
    }
}
