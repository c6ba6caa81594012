//! Importing OCI image layouts as layer images.
