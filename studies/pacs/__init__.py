"""PACS over DICOMweb and local DICOM import: connections, retrieval, de-identification, series selection and
the stored (assembled) volumes. Views and tasks call :mod:`studies.pacs.ingest`; the HTTP client is
:mod:`studies.pacs.client`; :mod:`studies.pacs.deid` is the de-identification profile."""
