"""Command-line tools: dmsetup (drop-in for LVM2's), devmap_mknod, devmapper."""
