"""The mathematics: SDEs, scores, losses, likelihoods, guidance, Gaussian mixtures, the mesh."""
