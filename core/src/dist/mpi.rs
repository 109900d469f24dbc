//! [`Collective`] over MPI (rsmpi): Open MPI or MPICH from the OS packages, one process per
//! rank, started by `mpirun` or `srun`. MPI is initialised once per process, when the trainer
//! joins the world, and finalised when this value is dropped.

use super::Collective;
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::traits::*;

pub struct Mpi {
    world: mpi::topology::SimpleCommunicator,
    /// This rank's place among the ranks on its machine (for the GPU it takes).
    local_rank: usize,
    // Dropped last: MPI_Finalize.
    _universe: mpi::environment::Universe,
}

impl Mpi {
    pub fn init() -> Result<Mpi> {
        // Only the trainer's own thread calls MPI; candle's worker threads never do.
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::Other("MPI is already initialised in this process".into()))?;
        let world = universe.world();
        // The ranks that share this machine's memory are the ones on this machine.
        let local_rank = world.split_shared(0).rank() as usize;
        Ok(Mpi { world, local_rank, _universe: universe })
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn world_size(&self) -> usize {
        self.world.size() as usize
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }
    fn describe(&self) -> String {
        let version = mpi::environment::library_version().unwrap_or_else(|_| "MPI".into());
        // "Open MPI v4.1.4, package: Debian OpenMPI, ident: …": the name and version.
        format!("MPI ({})", version.split(',').next().unwrap_or("").trim())
    }
}
