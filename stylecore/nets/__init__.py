"""The networks: VGG and HED loss networks, the stylizing transformer, model files, ONNX export, tiling."""
