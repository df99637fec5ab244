"""Pure image-processing functions (antspyx/nibabel/numpy) that the Nipype interfaces wrap."""
