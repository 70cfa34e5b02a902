"""Model families behind one interface (:class:`TransferModel`)."""
