"""The cases of tests/tract_forms.py: one small classifier per operator and attribute
form, compared there with onnxruntime.

- `graph.py`: what a case is (`Case`) and how its nodes are written (`Net`);
- `layers.py`: builders of layer-like operators (activations, convolutions, pooling,
  normalization, resizing, padding, reductions, recurrent, quantized, ai.onnx.ml);
- `tensors.py`: builders of tensor operators (shapes, indexing, constants, casts,
  comparisons, logic, sorting);
- `table.py`: `CASES`, every case in the order they run.
"""
