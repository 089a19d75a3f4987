"""GAN inversion of aligned images into W+: the thesis's losses (``losses``), ArcFace IR-SE50 (``arcface``),
LPIPS (``perceptual``), the batched Adam inverter (``inverter``), image tensors (``targets``) and a dataset's
sharded, resumable inversion (``dataset``). It imports only ``stylegan3``: reading and aligning a photo is
``reenactment.faces.align.load_target``."""
