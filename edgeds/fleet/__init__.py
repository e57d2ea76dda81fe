"""Fleet delivery, host side: signed bundles as OCI artifacts in a registry (:mod:`.oci`), fetched
by digest and verified before anything is installed (:mod:`.blobs`, the resumable, checked blob
download)."""
