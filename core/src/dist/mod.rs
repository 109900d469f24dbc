//! Data parallelism: the collective operations the trainer needs, over a real collective
//! library, and the world a process finds itself in.
//!
//! - [`Collective`]: rank, world size, all-reduce (sum) of f32 buffers, broadcast, barrier;
//! - [`SingleProcess`]: the default, world size 1, no dependency;
//! - [`mpi`] (cargo feature `mpi`): Open MPI or MPICH through rsmpi, started by `mpirun`/`srun`;
//! - [`nccl`] (cargo feature `nccl`): NCCL through cudarc for the gradients of ranks on GPUs,
//!   MPI for the rest (Horovod's split);
//! - [`world`]: which of these the environment asks for (`reft train` takes no flag for it).
//!
//! With ReFT and LoRA the frozen base is replicated and only the trainable state (kilobytes to
//! megabytes) is all-reduced, once per update: docs/distributed.md has the scaling model.

#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod grads;
pub mod world;

use crate::error::Result;

/// The collective operations of one process in a world of `world_size` ranks. Every rank
/// must make the same calls in the same order (as with MPI itself).
pub trait Collective {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// This rank's place among the ranks on its machine: the GPU a recipe's `device: cuda`
    /// gives it ([`gpu_of_rank`]).
    fn local_rank(&self) -> usize {
        0
    }
    /// Element-wise sum over all ranks, in place; every rank gets the result.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Element-wise sum of f64 values (counts and metrics that must stay exact).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// `root`'s bytes into every rank's `buf` (same length everywhere).
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Wait until every rank arrives.
    fn barrier(&self) -> Result<()>;
    /// The library underneath, for messages (`single process`, `MPI (Open MPI v4.1.4)`).
    fn describe(&self) -> String;

    /// No launcher, no library: [`SingleProcess`]. The trainer then skips the all-reduce.
    fn is_single_process(&self) -> bool {
        false
    }

    /// Rank 0 writes checkpoints, the adapter, logs and plots; the others write nothing.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Element-wise mean over all ranks, in place.
    fn all_reduce_mean(&self, buf: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(buf)?;
        let n = self.world_size() as f32;
        buf.iter_mut().for_each(|x| *x /= n);
        Ok(())
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _: &mut [u8], _: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "single process".into()
    }
    fn is_single_process(&self) -> bool {
        true
    }
}

/// The CUDA device a rank trains on, from the recipe's `device:` (None: the CPU). Under a
/// launcher, `cuda` without an ordinal means the GPU of the rank's local rank, one rank per
/// GPU, as Horovod and torchrun place them; `cuda:N` is taken as written (with
/// `CUDA_VISIBLE_DEVICES` set per rank, say).
pub fn gpu_of_rank(device: &str, local_rank: usize, world_size: usize) -> Result<Option<usize>> {
    let ordinal = crate::device::validate(device)?;
    Ok(match ordinal {
        Some(_) if world_size > 1 && device.trim() == "cuda" => Some(local_rank),
        other => other,
    })
}

/// Open the device this rank trains on ([`gpu_of_rank`]).
pub fn rank_device(device: &str, c: &dyn Collective) -> Result<candle_core::Device> {
    match gpu_of_rank(device, c.local_rank(), c.world_size())? {
        None => Ok(candle_core::Device::Cpu),
        Some(gpu) => candle_core::Device::new_cuda(gpu).map_err(|e| {
            crate::error::Error::Other(format!("device `{}` (rank {}: GPU {gpu}): {e}", device.trim(), c.rank()))
        }),
    }
}

/// All-reduce traffic of a training run on one rank.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommStats {
    pub updates: usize,
    /// Bytes this rank contributed to all-reduces.
    pub bytes: usize,
    /// Seconds in all-reduce calls, waiting for the slowest rank included.
    pub seconds: f64,
}

impl CommStats {
    pub fn describe(&self, ranks: usize) -> String {
        let n = self.updates.max(1) as f64;
        format!(
            "all-reduce over {ranks} ranks: {:.1} KB per update, {:.2} ms per update (waiting for the slowest rank included), {} updates",
            self.bytes as f64 / n / 1e3,
            1e3 * self.seconds / n,
            self.updates
        )
    }
}

/// Check that every rank holds the same `digest` (of `what`); the error names the ranks that
/// differ from rank 0, on every rank, so all stop together.
pub fn check_same_everywhere(c: &dyn Collective, digest: &[u8], what: &str) -> Result<()> {
    let mut root = digest.to_vec();
    c.broadcast_bytes(&mut root, 0)?;
    let mut differs = vec![0f64; c.world_size()];
    differs[c.rank()] = if root == digest { 0.0 } else { 1.0 };
    c.all_reduce_sum_f64(&mut differs)?;
    let bad: Vec<usize> = differs.iter().enumerate().filter(|(_, &d)| d > 0.0).map(|(r, _)| r).collect();
    if bad.is_empty() {
        return Ok(());
    }
    Err(crate::error::Error::Other(format!(
        "rank(s) {bad:?} of {} run another {what} than rank 0: start every rank with the same reft build, recipe and data",
        c.world_size()
    )))
}

/// The rows of a global batch this rank trains on: a contiguous, balanced share (the first
/// `len % world` ranks get one more). Every rank reads the same shuffled order (same seed),
/// so the shares of all ranks are the global batch, in order.
pub fn shard<T>(batch: &[T], rank: usize, world: usize) -> &[T] {
    let (len, world) = (batch.len(), world.max(1));
    let start = rank * len / world;
    let end = (rank + 1) * len / world;
    &batch[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shards_of_all_ranks_are_the_batch_in_order() {
        for len in [0usize, 1, 5, 31, 32, 33] {
            for world in 1..=6 {
                let batch: Vec<usize> = (0..len).collect();
                let joined: Vec<usize> = (0..world).flat_map(|r| shard(&batch, r, world).to_vec()).collect();
                assert_eq!(joined, batch, "len {len}, world {world}");
                let sizes: Vec<usize> = (0..world).map(|r| shard(&batch, r, world).len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
            }
        }
    }

    #[test]
    fn a_bare_cuda_device_means_the_local_ranks_gpu_under_a_launcher() {
        assert_eq!(gpu_of_rank("cpu", 3, 4).unwrap(), None);
        if cfg!(feature = "cuda") {
            assert_eq!(gpu_of_rank("cuda", 3, 4).unwrap(), Some(3));
            assert_eq!(gpu_of_rank("cuda", 3, 1).unwrap(), Some(0));
            assert_eq!(gpu_of_rank("cuda:1", 3, 4).unwrap(), Some(1));
        } else {
            let e = gpu_of_rank("cuda", 3, 4).unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
    }
}
