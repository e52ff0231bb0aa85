"""@@project@@: an ML pipeline on Aloft, owned by @@team@@."""
