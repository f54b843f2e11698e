//! Ridge regression on standardized features, solved in closed form with linfa's linear
//! algebra (`linfa-linalg`: a Cholesky solve of the normal equations, which for a dozen
//! features is exact and takes microseconds), with chosen coefficients kept non-negative so
//! that estimates grow with the sizes they read: a chosen column whose weight comes out
//! negative is dropped and the rest refitted, until none is. A column that does not vary
//! carries no weight.

use linfa_linalg::cholesky::SolveC;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::Error;

/// A fitted linear model over raw (unstandardized) features: `intercept + weights · x`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// The intercept.
    pub intercept: f64,
}

impl Linear {
    /// The model's value at `x`.
    pub fn predict(&self, x: &[f64]) -> f64 {
        self.intercept + self.weights.iter().zip(x).map(|(w, v)| w * v).sum::<f64>()
    }
}

/// Fits `y ≈ intercept + w · x` by ridge regression with `penalty` on standardized columns,
/// keeping `w[j] ≥ 0` wherever `non_negative[j]`: a column whose weight comes out negative is
/// dropped and the rest refitted, until none is.
pub fn fit(rows: &[Vec<f64>], y: &[f64], non_negative: &[bool], penalty: f64) -> Result<Linear, Error> {
    let n = rows.len();
    let width = non_negative.len();
    if n == 0 || y.len() != n || rows.iter().any(|r| r.len() != width) {
        return Err(Error::Fit(format!("{n} rows, {} targets, {width} features: shapes differ", y.len())));
    }
    if rows.iter().flatten().chain(y).any(|v| !v.is_finite()) {
        return Err(Error::Fit("a feature or target is not finite".into()));
    }
    // Columns that vary, and their mean and spread.
    let mut active: Vec<usize> = Vec::new();
    let mut mean = vec![0.0; width];
    let mut scale = vec![1.0; width];
    for j in 0..width {
        let m = rows.iter().map(|r| r[j]).sum::<f64>() / n as f64;
        let var = rows.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / n as f64;
        mean[j] = m;
        if var > 1e-12 {
            scale[j] = var.sqrt();
            active.push(j);
        }
    }
    let y_mean = y.iter().sum::<f64>() / n as f64;
    loop {
        let weights = if active.is_empty() { Vec::new() } else { ridge(rows, y, &active, &mean, &scale, penalty)? };
        let negative: Vec<usize> = active.iter().zip(&weights).filter(|(j, w)| non_negative[**j] && **w < 0.0).map(|(j, _)| *j).collect();
        if negative.is_empty() {
            let mut raw = vec![0.0; width];
            let mut intercept = y_mean;
            for (j, w) in active.iter().zip(&weights) {
                raw[*j] = w / scale[*j];
                intercept -= raw[*j] * mean[*j];
            }
            if raw.iter().any(|w| !w.is_finite()) || !intercept.is_finite() {
                return Err(Error::Fit("the fit diverged".into()));
            }
            return Ok(Linear { weights: raw, intercept });
        }
        active.retain(|j| !negative.contains(j));
    }
}

/// Ridge on the standardized `active` columns, centred target; weights in standardized units.
/// Minimizes `1/(2n)·‖y − Xw‖² + penalty/2·‖w‖²`: `(XᵀX/n + penalty·I) w = Xᵀy/n`.
fn ridge(rows: &[Vec<f64>], y: &[f64], active: &[usize], mean: &[f64], scale: &[f64], penalty: f64) -> Result<Vec<f64>, Error> {
    let n = rows.len() as f64;
    let p = active.len();
    let y_mean = y.iter().sum::<f64>() / n;
    let z = |i: usize, k: usize| (rows[i][active[k]] - mean[active[k]]) / scale[active[k]];
    let mut gram = Array2::<f64>::zeros((p, p));
    let mut rhs = Array2::<f64>::zeros((p, 1));
    for (i, target) in y.iter().enumerate() {
        for a in 0..p {
            let za = z(i, a);
            rhs[[a, 0]] += za * (target - y_mean) / n;
            for b in 0..=a {
                gram[[a, b]] += za * z(i, b) / n;
            }
        }
    }
    for a in 0..p {
        for b in 0..a {
            gram[[b, a]] = gram[[a, b]];
        }
        gram[[a, a]] += penalty.max(1e-9);
    }
    let w = gram.solvec(&rhs).map_err(|e| Error::Fit(format!("the normal equations: {e}")))?;
    Ok(w.column(0).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_line_and_keeps_weights_non_negative() {
        let rows: Vec<Vec<f64>> = (0..50).map(|i| vec![i as f64, (i % 7) as f64]).collect();
        let y: Vec<f64> = rows.iter().map(|r| 3.0 + 2.0 * r[0] - 0.5 * r[1]).collect();
        let free = fit(&rows, &y, &[false, false], 1e-6).expect("fits");
        assert!((free.weights[0] - 2.0).abs() < 1e-2, "{free:?}");
        assert!((free.weights[1] + 0.5).abs() < 1e-2, "{free:?}");
        let held = fit(&rows, &y, &[false, true], 1e-6).expect("fits");
        assert_eq!(held.weights[1], 0.0, "{held:?}");
    }

    #[test]
    fn refuses_what_cannot_be_fitted() {
        assert!(fit(&[], &[], &[true], 1e-3).is_err());
        assert!(fit(&[vec![f64::NAN]], &[1.0], &[true], 1e-3).is_err());
        assert!(fit(&[vec![1.0, 2.0]], &[1.0], &[true], 1e-3).is_err());
        // A constant column carries no weight.
        let constant = fit(&[vec![1.0], vec![1.0]], &[2.0, 4.0], &[true], 1e-3).expect("fits");
        assert_eq!(constant.weights, vec![0.0]);
        assert!((constant.intercept - 3.0).abs() < 1e-9);
    }
}
