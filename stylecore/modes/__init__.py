"""The three ways to stylize a frame sequence: optimization (Gatys/Ruder), feedforward, style video."""
