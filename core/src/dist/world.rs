//! Which world this process is in, from what the launcher put in its environment: `mpirun`
//! (Open MPI: `OMPI_COMM_WORLD_SIZE`), MPICH's hydra and Slurm's PMI (`PMI_SIZE`), PMIx
//! (`PMIX_RANK` with Slurm's `SLURM_NTASKS`). No flag: `mpirun -n 4 reft train r.yaml` is
//! data-parallel, `reft train r.yaml` is one process.

use super::{Collective, SingleProcess};
use crate::error::{Error, Result};

/// What the launcher says, before any MPI call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// The variable it was read from, for messages.
    pub source: &'static str,
}

fn var(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The launcher's world, if a launcher started this process.
pub fn launch() -> Option<Launch> {
    if let (Some(world_size), Some(rank)) = (var("OMPI_COMM_WORLD_SIZE"), var("OMPI_COMM_WORLD_RANK")) {
        return Some(Launch { rank, world_size, source: "OMPI_COMM_WORLD_SIZE (mpirun)" });
    }
    if let (Some(world_size), Some(rank)) = (var("PMI_SIZE"), var("PMI_RANK")) {
        return Some(Launch { rank, world_size, source: "PMI_SIZE (MPICH / Slurm PMI)" });
    }
    if let (Some(world_size), Some(rank)) = (var("SLURM_NTASKS"), var("PMIX_RANK")) {
        return Some(Launch { rank, world_size, source: "SLURM_NTASKS with PMIX_RANK (srun --mpi=pmix)" });
    }
    None
}

/// Join the world the environment describes, for a run on the recipe's `device`: one process
/// without a launcher; under one, MPI (built with the `mpi` feature), or NCCL for ranks on
/// GPUs (built with `nccl`, and `cuda` to train on them). A multi-rank launch of a build
/// without MPI is refused: the ranks would each train alone and write the same folder.
pub fn connect(device: &str) -> Result<Box<dyn Collective>> {
    let Some(launch) = launch() else { return Ok(Box::new(SingleProcess)) };
    connect_launched(launch, device)
}

#[cfg(feature = "mpi")]
fn connect_launched(launch: Launch, device: &str) -> Result<Box<dyn Collective>> {
    let mpi = super::mpi::Mpi::init()?;
    if mpi.world_size() != launch.world_size || mpi.rank() != launch.rank {
        return Err(Error::Other(format!(
            "{} says rank {} of {}, but MPI says rank {} of {}: is this reft linked against the MPI that launched it?",
            launch.source,
            launch.rank,
            launch.world_size,
            mpi.rank(),
            mpi.world_size()
        )));
    }
    #[cfg(feature = "nccl")]
    if let Some(gpu) = super::gpu_of_rank(device, mpi.local_rank(), mpi.world_size())? {
        return Ok(Box::new(super::nccl::Nccl::init(mpi, gpu)?));
    }
    // Ranks on the CPU, or on GPUs in a build without NCCL (the gradients then travel
    // through host memory over MPI).
    let _ = device;
    Ok(Box::new(mpi))
}

#[cfg(not(feature = "mpi"))]
fn connect_launched(launch: Launch, _device: &str) -> Result<Box<dyn Collective>> {
    if launch.world_size <= 1 {
        return Ok(Box::new(SingleProcess));
    }
    Err(Error::Other(format!(
        "launched as rank {} of {} ({}), but this reft was built without MPI; each rank would train alone. \
Build it with `cargo build --release --features mpi` (docs/distributed.md), or run one process without the launcher",
        launch.rank, launch.world_size, launch.source
    )))
}
