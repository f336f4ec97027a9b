"""Models: backbones, the HierLoc photo/place encoders, geometry."""
