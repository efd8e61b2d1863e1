//! The convolutional classifiers trained here, and their weights in ONNX layout.
//!
//! A net is `convs.len()` blocks of 3x3 convolution (padding 1) -> ReLU -> 2x2 max pooling,
//! then flatten, an optional hidden dense layer with ReLU, and a dense output layer. The
//! same description drives training (burn) and export (our ONNX writer), so the two cannot
//! drift apart.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// The architecture of a convolutional classifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// Output channels of each conv block; each block halves height and width.
    pub convs: Vec<usize>,
    /// Width of the hidden dense layer; 0 for none.
    #[serde(default)]
    pub hidden: usize,
}

/// The shape a net is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl NetSpec {
    /// Features entering the first dense layer.
    pub(crate) fn flat_features(&self, shape: NetShape) -> usize {
        let (mut c, mut h, mut w) = (shape.channels, shape.height, shape.width);
        for &out in &self.convs {
            c = out;
            h /= 2;
            w /= 2;
        }
        c * h * w
    }

    /// The number of trainable parameters.
    pub(crate) fn params(&self, shape: NetShape) -> u64 {
        let mut total = 0;
        let mut c_in = shape.channels;
        for &c_out in &self.convs {
            total += c_out * c_in * 9 + c_out;
            c_in = c_out;
        }
        let mut features = self.flat_features(shape);
        if self.hidden > 0 {
            total += features * self.hidden + self.hidden;
            features = self.hidden;
        }
        (total + features * shape.classes + shape.classes) as u64
    }

    /// Checks the spec fits the input: every conv block needs at least 2x2 pixels to pool.
    pub(crate) fn validate(&self, shape: NetShape) -> Result<(), String> {
        if self.convs.iter().any(|&c| c == 0) {
            return Err("conv channel counts must be positive".to_string());
        }
        if self.flat_features(shape) == 0 {
            return Err(format!(
                "{} conv blocks pool a {}x{} input down to nothing",
                self.convs.len(),
                shape.height,
                shape.width
            ));
        }
        Ok(())
    }

    pub(crate) fn init(&self, shape: NetShape, device: &Device) -> ConvNet {
        let mut c_in = shape.channels;
        let convs = self
            .convs
            .iter()
            .map(|&c_out| {
                let conv = Conv2dConfig::new([c_in, c_out], [3, 3])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device);
                c_in = c_out;
                conv
            })
            .collect();
        let mut features = self.flat_features(shape);
        let hidden = (self.hidden > 0).then(|| {
            let layer = LinearConfig::new(features, self.hidden).init(device);
            features = self.hidden;
            layer
        });
        ConvNet {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            hidden,
            output: LinearConfig::new(features, shape.classes).init(device),
        }
    }
}

/// A trainable net built from a [`NetSpec`].
#[derive(Module, Debug)]
pub(crate) struct ConvNet {
    convs: Vec<Conv2d>,
    pool: MaxPool2d,
    hidden: Option<Linear>,
    output: Linear,
}

/// A dense layer's weights: `weight` is `[inputs, outputs]` row-major (ONNX Gemm `B`).
#[derive(Debug, Clone)]
pub(crate) struct DenseWeights {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A conv layer's weights: `weight` is `[out, in, 3, 3]` row-major (ONNX Conv `W`).
#[derive(Debug, Clone)]
pub(crate) struct ConvWeights {
    pub in_channels: usize,
    pub out_channels: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// All weights of a net, in the order of the forward pass.
#[derive(Debug, Clone)]
pub(crate) struct NetWeights {
    pub convs: Vec<ConvWeights>,
    pub hidden: Option<DenseWeights>,
    pub output: DenseWeights,
}

impl ConvNet {
    /// `[batch, channels, height, width]` -> logits `[batch, classes]`.
    pub(crate) fn forward(&self, mut x: Tensor<4>) -> Tensor<2> {
        for conv in &self.convs {
            x = self.pool.forward(relu(conv.forward(x)));
        }
        let mut flat: Tensor<2> = x.flatten(1, 3);
        if let Some(hidden) = &self.hidden {
            flat = relu(hidden.forward(flat));
        }
        self.output.forward(flat)
    }

    /// Copies the weights out of the backend.
    pub(crate) fn weights(&self) -> Result<NetWeights, String> {
        let convs = self
            .convs
            .iter()
            .map(|conv| {
                let dims = conv.weight.val().dims();
                Ok(ConvWeights {
                    in_channels: dims[1],
                    out_channels: dims[0],
                    weight: to_vec(conv.weight.val())?,
                    bias: match &conv.bias {
                        Some(b) => to_vec(b.val())?,
                        None => vec![0.0; dims[0]],
                    },
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let hidden = self.hidden.as_ref().map(dense).transpose()?;
        Ok(NetWeights {
            convs,
            hidden,
            output: dense(&self.output)?,
        })
    }
}

fn dense(layer: &Linear) -> Result<DenseWeights, String> {
    let [inputs, outputs] = layer.weight.val().dims();
    Ok(DenseWeights {
        inputs,
        outputs,
        weight: to_vec(layer.weight.val())?,
        bias: match &layer.bias {
            Some(b) => to_vec(b.val())?,
            None => vec![0.0; outputs],
        },
    })
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, String> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| format!("cannot read weights: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: NetShape = NetShape {
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };

    #[test]
    fn parameter_count_matches_the_built_module() {
        let device = Device::flex();
        for spec in [
            NetSpec {
                convs: vec![8, 16],
                hidden: 0,
            },
            NetSpec {
                convs: vec![32, 64],
                hidden: 128,
            },
        ] {
            let net = spec.init(SHAPE, &device);
            assert_eq!(net.num_params() as u64, spec.params(SHAPE), "{spec:?}");
        }
    }

    #[test]
    fn forward_gives_one_row_of_logits_per_image() {
        let device = Device::flex();
        let net = NetSpec {
            convs: vec![4],
            hidden: 8,
        }
        .init(SHAPE, &device);
        let x = Tensor::<4>::zeros([3, 1, 28, 28], &device);
        assert_eq!(net.forward(x).dims(), [3, 10]);
    }

    #[test]
    fn too_many_blocks_for_the_input_is_an_error() {
        let spec = NetSpec {
            convs: vec![4; 6],
            hidden: 0,
        };
        assert!(spec.validate(SHAPE).is_err());
    }
}
