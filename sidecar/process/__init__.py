"""The process group: assembly of one worker, the supervisor of several, the partitions they
share and the mesh between them."""
