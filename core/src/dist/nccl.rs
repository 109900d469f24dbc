//! [`Collective`] for ranks that train on GPUs, split as Horovod splits it: NCCL (through
//! cudarc) sums the gradients GPU to GPU over NVLink or InfiniBand; MPI starts the ranks,
//! hands out NCCL's unique id, and carries the small control traffic (the f64 loss and
//! counts, the start-up digest, barriers). One rank per GPU.
//!
//! The trainer's [`grads::all_reduce`](super::grads::all_reduce) gathers every gradient into
//! one host buffer; this collective copies it to its GPU, all-reduces it there and copies it
//! back. For ReFT and LoRA that buffer is kilobytes to a few megabytes per update
//! (docs/distributed.md, "The scaling model"), so the two copies cost far less than the update.
//!
//! cudarc opens libcuda and libnccl at run time (or links them, in a `cuda` build) and panics
//! when one is missing; start-up turns such a panic into an error that names the rank.

use super::mpi::Mpi;
use super::Collective;
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp};
use std::sync::Arc;

pub struct Nccl {
    // Field order is drop order: the communicator before its stream, MPI (MPI_Finalize) last.
    comm: Comm,
    stream: Arc<CudaStream>,
    gpu: usize,
    mpi: Mpi,
}

/// The length of NCCL's unique id (`ncclUniqueId`), which rank 0 broadcasts.
const ID_BYTES: usize = 128;

impl Nccl {
    /// Join the NCCL world of the MPI world `mpi`, this rank on CUDA device `gpu`. Every
    /// rank must call this. A rank that cannot open its GPU or NCCL stops every rank with an
    /// error naming it, instead of leaving the others blocked in NCCL's start-up.
    pub fn init(mpi: Mpi, gpu: usize) -> Result<Nccl> {
        let (rank, world) = (mpi.rank(), mpi.world_size());
        let opened = catch_panic("CUDA", || CudaContext::new(gpu)).map(|ctx| ctx.default_stream());
        // Rank 0 draws the id and broadcasts it behind a flag saying whether it could.
        let mut id_msg = vec![0u8; 1 + ID_BYTES];
        let mut own_error = opened.as_ref().err().map(|e| e.to_string());
        if rank == 0 && own_error.is_none() {
            match catch_panic("NCCL", Id::new) {
                Ok(id) => {
                    id_msg[0] = 1;
                    for (b, c) in id_msg[1..].iter_mut().zip(id.internal()) {
                        *b = *c as u8;
                    }
                }
                Err(e) => own_error = Some(e.to_string()),
            }
        }
        mpi.broadcast_bytes(&mut id_msg, 0)?;
        let mut failed = vec![0f64; world];
        failed[rank] = if own_error.is_some() { 1.0 } else { 0.0 };
        mpi.all_reduce_sum_f64(&mut failed)?;
        let bad: Vec<usize> = (0..world).filter(|&r| failed[r] > 0.0).collect();
        if !bad.is_empty() {
            let own = own_error.map(|e| format!(" (here: {e})")).unwrap_or_default();
            return Err(Error::Other(format!(
                "NCCL could not start: rank(s) {bad:?} of {world} could not open their GPU or NCCL{own}. \
NCCL needs an NVIDIA GPU per rank, its driver (libcuda) and libnccl 2 on the library path"
            )));
        }
        let stream = opened?;
        let mut internal = [0 as std::ffi::c_char; ID_BYTES];
        for (c, b) in internal.iter_mut().zip(&id_msg[1..]) {
            *c = *b as std::ffi::c_char;
        }
        let comm = catch_panic("NCCL", || Comm::from_rank(stream.clone(), rank, world, Id::uninit(internal)))
            .map_err(|e| Error::Other(format!("rank {rank} on GPU {gpu}: NCCL communicator: {e}")))?;
        let nccl = Nccl { comm, stream, gpu, mpi };
        nccl.self_check()?;
        Ok(nccl)
    }

    /// Sum a known buffer once before training: rank r gives r + 1, so every element must come
    /// back as N(N+1)/2. A mis-wired world (wrong count, type or operation) fails here, by
    /// name, instead of training on wrong gradients.
    fn self_check(&self) -> Result<()> {
        let world = self.world_size();
        let mut probe = vec![(self.rank() + 1) as f32; 257];
        self.all_reduce_sum(&mut probe)?;
        let want = (world * (world + 1) / 2) as f32;
        match probe.iter().position(|&x| x != want) {
            None => Ok(()),
            Some(i) => Err(Error::Other(format!(
                "NCCL self-check failed on rank {} (GPU {}): element {i} of a {world}-rank sum is {}, expected {want}",
                self.rank(),
                self.gpu,
                probe[i]
            ))),
        }
    }

    fn all_reduce_on_gpu(&self, buf: &mut [f32]) -> std::result::Result<(), String> {
        let mut on_gpu = self.stream.clone_htod(&*buf).map_err(|e| format!("copy to GPU: {e:?}"))?;
        self.comm.all_reduce_in_place(&mut on_gpu, &ReduceOp::Sum).map_err(|e| format!("ncclAllReduce: {e:?}"))?;
        self.stream.memcpy_dtoh(&on_gpu, buf).map_err(|e| format!("copy from GPU: {e:?}"))?;
        self.stream.synchronize().map_err(|e| format!("stream synchronize: {e:?}"))
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.mpi.rank()
    }
    fn world_size(&self) -> usize {
        self.mpi.world_size()
    }
    fn local_rank(&self) -> usize {
        self.mpi.local_rank()
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.all_reduce_on_gpu(buf)
            .map_err(|e| Error::Other(format!("rank {} on GPU {}: all-reduce of {} floats: {e}", self.rank(), self.gpu, buf.len())))
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.mpi.all_reduce_sum_f64(buf)
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.mpi.broadcast_bytes(buf, root)
    }
    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }
    fn describe(&self) -> String {
        format!("NCCL on GPU {} (control over {})", self.gpu, self.mpi.describe())
    }
}

/// Run `f`, turning both its error and a panic inside cudarc (a library it could not open, a
/// missing symbol) into an error that says which `library` failed. The panic is not printed:
/// the error carries its message.
fn catch_panic<T, E: std::fmt::Debug>(library: &str, f: impl FnOnce() -> std::result::Result<T, E>) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Other(format!("{library}: {e:?}"))),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            // cudarc lists every file name it tried; the library's name is what helps.
            let message = message.split(" - searched for").next().unwrap_or_default();
            Err(Error::Other(format!("{library}: {message}")))
        }
    }
}
