"""The 3D side: aligned depth paired with colour frames, and each region's point, pose and cloud from it."""
