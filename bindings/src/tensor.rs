//! Float samples at the boundary, carried as bytes.

use crate::error::StudentError;

/// One or more input samples (or logits), as 32-bit floats.
///
/// Crosses the boundary as little-endian bytes, 4 per value, so that Kotlin sees a
/// `FloatArray` and Swift a `[Float]` (converted by the code that `uniffi.toml` puts in the
/// generated bindings) instead of a list of boxed floats.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor(Vec<f32>);

impl Tensor {
    /// The values, in order.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Decodes little-endian bytes, 4 per value.
    ///
    /// # Errors
    /// [`StudentError::InvalidInput`] when the byte count is not a multiple of 4.
    pub fn from_le_bytes(bytes: &[u8]) -> Result<Tensor, StudentError> {
        if bytes.len() % 4 != 0 {
            return Err(StudentError::InvalidInput {
                reason: format!(
                    "{} tensor bytes is not a whole number of floats",
                    bytes.len()
                ),
            });
        }
        let values = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Tensor(values))
    }

    /// Encodes the values as little-endian bytes, 4 per value.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

impl From<Vec<f32>> for Tensor {
    fn from(values: Vec<f32>) -> Self {
        Tensor(values)
    }
}

uniffi::custom_type!(Tensor, Vec<u8>, {
    lower: |tensor| tensor.to_le_bytes(),
    try_lift: |bytes| Ok(Tensor::from_le_bytes(&bytes)?),
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_little_endian() {
        let tensor = Tensor::from(vec![1.0, -2.5, f32::MIN_POSITIVE]);
        let bytes = tensor.to_le_bytes();
        assert_eq!(&bytes[..4], &[0, 0, 0x80, 0x3f]);
        assert_eq!(Tensor::from_le_bytes(&bytes).unwrap(), tensor);
        assert!(Tensor::from_le_bytes(&bytes[..5]).is_err());
    }
}
