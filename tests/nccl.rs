//! NCCL's start-up (cargo feature `nccl`), in a process of its own: MPI starts here as a
//! singleton (one rank, no `mpirun`), and the NCCL collective joins it on GPU 0.
//!
//! - On a machine with an NVIDIA GPU and driver, NCCL starts, passes its self-check (a known
//!   sum), and a one-rank all-reduce leaves a buffer as it was.
//! - On a machine without (CI), starting it is an error that names the rank and the missing
//!   driver library, not a panic: what a user who launches GPU ranks on the wrong nodes sees.
//!
//! The training paths over NCCL are in tests/distributed.rs (`--features cuda,nccl`).
#![cfg(feature = "nccl")]

use reft_core::dist::{mpi::Mpi, nccl::Nccl, Collective};

#[test]
fn nccl_starts_on_a_gpu_and_refuses_by_name_without_one() {
    let mpi = Mpi::init().expect("MPI singleton start-up");
    assert_eq!((mpi.rank(), mpi.world_size()), (0, 1));
    // The kernel driver's control device exists exactly where an NVIDIA driver is loaded.
    let has_gpu = std::path::Path::new("/dev/nvidiactl").exists();
    match Nccl::init(mpi, 0) {
        Ok(nccl) => {
            assert!(has_gpu, "NCCL started on a machine without /dev/nvidiactl");
            assert!(nccl.describe().starts_with("NCCL on GPU 0"), "{}", nccl.describe());
            let before: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 7.0).collect();
            let mut buf = before.clone();
            nccl.all_reduce_sum(&mut buf).unwrap();
            assert_eq!(buf, before, "a one-rank all-reduce must leave the buffer as it was");
        }
        Err(e) => {
            let e = e.to_string();
            eprintln!("as expected without a GPU: {e}");
            assert!(!has_gpu, "this machine has an NVIDIA driver, but NCCL did not start: {e}");
            assert!(e.contains("NCCL could not start: rank(s) [0] of 1"), "{e}");
            assert!(e.contains("\"cuda\" shared library") && e.contains("libcuda"), "the error should name the driver library: {e}");
        }
    }
}
