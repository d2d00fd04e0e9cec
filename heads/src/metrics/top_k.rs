//! Top-k selection and accuracy over score rows.

use candle_core::{DType, Tensor};

/// The `k` highest scores of one row as `(class index, score)`, best first. Ties keep the lower
/// class index first (a fixed rule, so half-precision ties give reproducible rankings); NaN scores
/// rank last.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a], scores[b]);
        match (sa.is_nan(), sb.is_nan()) {
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ => sb.total_cmp(&sa),
        }
        .then(a.cmp(&b))
    });
    order.into_iter().take(k).map(|i| (i, scores[i])).collect()
}

/// Fraction of rows whose target class is among the `k` best scores: `logits` `(N, K)` (any float
/// dtype), `targets` class indices of length `N`. Ranking follows [`top_k`]; an empty batch gives 0.
pub fn top_k_accuracy(logits: &Tensor, targets: &[usize], k: usize) -> candle_core::Result<f64> {
    let (n, classes) = logits.dims2()?;
    if n != targets.len() {
        candle_core::bail!("{} targets for {n} rows of logits", targets.len());
    }
    if let Some(t) = targets.iter().find(|t| **t >= classes) {
        candle_core::bail!("target class {t} is out of range for {classes} classes");
    }
    if n == 0 {
        return Ok(0.0);
    }
    let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
    let hits = rows
        .iter()
        .zip(targets)
        .filter(|(row, t)| top_k(row, k).iter().any(|(c, _)| c == *t))
        .count();
    Ok(hits as f64 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn ties_prefer_the_lower_index_and_nan_ranks_last() {
        let ranked = top_k(&[0.5, f32::NAN, 0.9, 0.5, 0.9], 5);
        let order: Vec<usize> = ranked.iter().map(|r| r.0).collect();
        assert_eq!(order, vec![2, 4, 0, 3, 1]);
        assert_eq!(top_k(&[1.0, 2.0], 5).len(), 2);
    }

    #[test]
    fn accuracy_counts_hits_within_k() {
        let logits = Tensor::new(
            &[[0.1f32, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]],
            &Device::Cpu,
        )
        .unwrap();
        let targets = [1, 1, 0];
        assert!((top_k_accuracy(&logits, &targets, 1).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((top_k_accuracy(&logits, &targets, 2).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(top_k_accuracy(&logits, &targets, 3).unwrap(), 1.0);
        assert!(top_k_accuracy(&logits, &[0, 1], 1).is_err());
        assert!(top_k_accuracy(&logits, &[0, 1, 3], 1).is_err());
    }
}
