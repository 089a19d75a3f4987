"""GAN inversion into W+: the thesis's losses (``losses``), ArcFace IR-SE50 (``arcface``), LPIPS (``perceptual``),
the batched Adam inverter (``inverter``), targets from photos (``targets``) and dataset sharding (``dataset``)."""
