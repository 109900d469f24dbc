//! The gradients of the trainable parameters, summed over all ranks in one all-reduce per
//! update (one buffer: a has-gradient flag per parameter, then every gradient, flattened).

use super::Collective;
use crate::error::Result;
use crate::intervention::NamedVar;
use candle_core::{backprop::GradStore, DType, Tensor};

/// Sum `grads` over all ranks, in place; returns the bytes each rank sent. A parameter that
/// no rank has a gradient for stays without one, so AdamW skips it as one process would.
/// Under a launcher this runs even for one rank, so `mpirun -n 1` tests the library's path.
pub fn all_reduce(collective: &dyn Collective, params: &[(String, NamedVar)], grads: &mut GradStore) -> Result<usize> {
    if collective.is_single_process() {
        return Ok(0);
    }
    let total: usize = params.iter().map(|(_, p)| p.var.elem_count()).sum();
    let mut buf = vec![0f32; params.len()];
    buf.reserve(total);
    for (i, (_, p)) in params.iter().enumerate() {
        match grads.get(p.var.as_tensor()) {
            Some(g) => {
                buf[i] = 1.0;
                buf.extend(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
            }
            None => buf.extend(std::iter::repeat_n(0f32, p.var.elem_count())),
        }
    }
    collective.all_reduce_sum(&mut buf)?;
    let mut offset = params.len();
    for (i, (_, p)) in params.iter().enumerate() {
        let n = p.var.elem_count();
        if buf[i] > 0.0 {
            let g = Tensor::from_slice(&buf[offset..offset + n], p.var.dims(), p.var.device())?.to_dtype(p.var.dtype())?;
            grads.insert(p.var.as_tensor(), g);
        }
        offset += n;
    }
    Ok(buf.len() * std::mem::size_of::<f32>())
}
