"""GAN inversion into W+ (losses, identity network, batched optimiser): not implemented yet (issue 4)."""
