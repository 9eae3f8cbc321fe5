//! A plain dense f32 tensor shared by every backend and by the accuracy metrics.

use serde::{Deserialize, Serialize};

/// A named tensor shape, as an engine declares its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Tensor name in the model.
    pub name: String,
    /// Shape with the batch size applied.
    pub shape: Vec<usize>,
}

/// A dense row-major f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Elements in row-major order; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor from a shape and its elements.
    ///
    /// Returns `None` if the element count does not match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Tensor> {
        (shape.iter().product::<usize>() == data.len()).then_some(Tensor { shape, data })
    }

    /// A deterministic pseudo-random tensor in [-1, 1) (for latency inputs).
    pub fn pseudo_random(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let data = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_element_count() {
        assert!(Tensor::new(vec![2, 3], vec![0.0; 6]).is_some());
        assert!(Tensor::new(vec![2, 3], vec![0.0; 5]).is_none());
    }

    #[test]
    fn pseudo_random_is_deterministic_and_bounded() {
        let a = Tensor::pseudo_random(&[4, 16], 7);
        assert_eq!(a, Tensor::pseudo_random(&[4, 16], 7));
        assert_ne!(a, Tensor::pseudo_random(&[4, 16], 8));
        assert!(a.data.iter().all(|x| (-1.0..1.0).contains(x)));
    }
}
