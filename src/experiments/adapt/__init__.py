"""Domain adaptation: gradient reversal, domain discriminator and the adversarial loss, EMA
teacher, AdaBN, label-free validators and the methods built from them (``adapt=``, one module each
in ``experiments.adapt.methods``)."""
