//! Linear warm-up then linear decay to zero (HF `get_linear_schedule_with_warmup`).

/// Learning rate for update number `step` (0-based) of `total`.
pub fn linear_lr(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let rest = total.saturating_sub(warmup).max(1);
    base * (total.saturating_sub(step) as f64 / rest as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        assert_eq!(linear_lr(1.0, 0, 100, 10), 0.0);
        assert_eq!(linear_lr(1.0, 5, 100, 10), 0.5);
        assert_eq!(linear_lr(1.0, 10, 100, 10), 1.0);
        assert_eq!(linear_lr(1.0, 55, 100, 10), 0.5);
        assert_eq!(linear_lr(1.0, 0, 100, 0), 1.0);
        assert_eq!(linear_lr(1.0, 100, 100, 0), 0.0);
    }
}
