//! Resize (opset 11 and later) and Upsample of the two spatial axes of an NCHW tensor: nearest
//! (every nearest_mode) and linear (bilinear), with the half_pixel, pytorch_half_pixel,
//! asymmetric and align_corners coordinate transformations.

use super::{NodeCtx, OpFamily};
use crate::backend::cuda::graph::{attr_str, Layer, Planner, Value};
use crate::model::onnx::attr_int;

/// Resize, Upsample.
pub(crate) struct ResizeFamily;

impl OpFamily for ResizeFamily {
    fn ops(&self) -> &'static [&'static str] {
        &["Resize", "Upsample"]
    }

    fn plan(&self, p: &mut Planner<'_>, n: &NodeCtx<'_>) -> Result<Option<Value>, String> {
        let node = n.node;
        let x = p.input(node, 0)?;
        if x.shape.len() != 4 {
            return Err(format!("expects a 4-D NCHW input, got {:?}", x.shape));
        }
        let upsample = node.op_type == "Upsample";
        if !upsample && p.opset < 11 {
            return Err(
                "Resize before opset 11 is not supported (fix: export at opset 11 or later)".into(),
            );
        }
        let mode = attr_str(node, "mode").unwrap_or_else(|| "nearest".into());
        let linear = match mode.as_str() {
            "nearest" => false,
            "linear" | "bilinear" => true,
            other => return Err(format!("mode {other:?} is not supported (nearest, linear)")),
        };
        if attr_int(node, "antialias").unwrap_or(0) != 0 {
            return Err("antialias=1 is not supported".into());
        }
        if node.attribute.iter().any(|a| a.name == "axes") {
            return Err("the axes attribute is not supported (all four axes)".into());
        }
        // Output size and scale of each axis, from sizes or scales.
        let input_or_empty = |i: usize| node.input.get(i).filter(|s| !s.is_empty()).is_some();
        let (scales, sizes): (Option<Vec<f32>>, Option<Vec<usize>>) = if upsample {
            let s = match node.attribute.iter().find(|a| a.name == "scales") {
                Some(a) => a.floats.clone(),
                None => p.const_input(node, 1)?.floats(),
            };
            (Some(s), None)
        } else if input_or_empty(3) {
            let sz = p.const_input(node, 3)?.ints()?;
            (None, Some(sz.iter().map(|&v| v.max(0) as usize).collect()))
        } else if input_or_empty(2) {
            (Some(p.const_input(node, 2)?.floats()), None)
        } else {
            return Err("neither scales nor sizes given".into());
        };
        let (out, scale): (Vec<usize>, Vec<f32>) = match (scales, sizes) {
            (Some(s), _) if s.len() == 4 => (
                x.shape
                    .iter()
                    .zip(&s)
                    .map(|(&d, &k)| (d as f32 * k).floor() as usize)
                    .collect(),
                s,
            ),
            (_, Some(sz)) if sz.len() == 4 => (
                sz.clone(),
                x.shape
                    .iter()
                    .zip(&sz)
                    .map(|(&d, &o)| o as f32 / d as f32)
                    .collect(),
            ),
            _ => return Err("scales/sizes must have 4 entries (N, C, H, W)".into()),
        };
        if out[0] != x.shape[0] || out[1] != x.shape[1] || out[2] == 0 || out[3] == 0 {
            return Err(format!(
                "only H and W are resized (output {out:?} of {:?})",
                x.shape
            ));
        }
        let transform = if upsample {
            "asymmetric".to_string()
        } else {
            attr_str(node, "coordinate_transformation_mode").unwrap_or_else(|| "half_pixel".into())
        };
        let coord = |axis: usize| -> Result<(f32, f32), String> {
            let (input, output, s) = (x.shape[axis] as f32, out[axis], scale[axis]);
            Ok(match transform.as_str() {
                "half_pixel" => (1.0 / s, 0.5 / s - 0.5),
                "pytorch_half_pixel" if output > 1 => (1.0 / s, 0.5 / s - 0.5),
                "pytorch_half_pixel" => (0.0, 0.0),
                "asymmetric" => (1.0 / s, 0.0),
                // ONNX takes the resized length as input · scale, unrounded.
                "align_corners" if output > 1 => ((input - 1.0) / (input * s - 1.0), 0.0),
                "align_corners" => (0.0, 0.0),
                other => {
                    return Err(format!(
                        "coordinate_transformation_mode {other:?} is not supported"
                    ))
                }
            })
        };
        let ((ah, bh), (aw, bw)) = (coord(2)?, coord(3)?);
        let nearest = if upsample {
            "floor".to_string()
        } else {
            attr_str(node, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into())
        };
        let rounding = match nearest.as_str() {
            "round_prefer_floor" => 0,
            "round_prefer_ceil" => 1,
            "floor" => 2,
            "ceil" => 3,
            other => return Err(format!("nearest_mode {other:?} is not supported")),
        };
        let dims = [
            x.shape[0] * x.shape[1],
            x.shape[2],
            x.shape[3],
            out[2],
            out[3],
        ];
        let y = p.plan.new_buffer(dims[0] * out[2] * out[3]);
        p.push(
            n.name.clone(),
            Layer::Resize {
                x: x.buffer,
                y,
                dims,
                coord: [ah, bh, aw, bw],
                linear,
                rounding,
                q: n.q,
            },
        );
        Ok(Some(Value {
            buffer: y,
            shape: out,
            q: n.q,
        }))
    }
}
