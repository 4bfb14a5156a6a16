"""De-identification on ingest: DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile with

- **Retain Longitudinal Temporal Information with Full Dates Option** (113106): study, series, acquisition and
  content dates and times are kept unchanged (the registry needs exam dates, temporal splits and ages);
- **Retain Patient Characteristics Option** (113108): PatientSex, PatientAge, PatientSize, PatientWeight are
  kept (features of the models: sex and age);
- **Retain UIDs Option** (113110): Study/Series/SOP Instance and Frame of Reference UIDs are kept, so a stored
  series stays linked to its PACS original (re-pulling it finds the same row: idempotence). Instances with
  empty or missing UIDs get deterministic replacement UIDs from their content
  (:func:`analysis.imaging.dicom.content_uid`, done by the assembler) and the flag ``replaced_empty_uids``.

What happens to each attribute (``ACTIONS``; PS3.15 action codes D = replace, Z = empty, X = remove, K = keep):

=====================================================  ======  ============================================
PatientID, PatientName                                  D       the project pseudonym (PseudonymMap)
PatientBirthDate                                        Z       age at exam kept in PatientAge instead
AccessionNumber, StudyID, ReferringPhysicianName        Z       type 2 attributes: present but empty
names, other ids, addresses, phone numbers, institution X       see ``REMOVE`` below (PS3.15 Table E.1-1)
operators, physicians, station, device serial number    X
descriptions and free-text comments                      X       may hold names (Clean Descriptors not used)
every other PN (person name) element, at any depth       X       safety net for names the table misses
private elements                                        X       Retain Safe Private Option not used
curves (50xx), overlay data and comments (60xx)         X       may burn in text
dates and times                                         K       Retain Longitudinal ... Full Dates Option
PatientSex, PatientAge, PatientSize, PatientWeight      K       Retain Patient Characteristics Option
UIDs                                                    K       Retain UIDs Option
Manufacturer, ManufacturerModelName, KVP, geometry,     K       not identifying; needed for measurement
pixel data, contrast agent
=====================================================  ======  ============================================

PatientIdentityRemoved (0012,0062) is set to YES, DeidentificationMethod (0012,0063) names this profile and
DeidentificationMethodCodeSequence (0012,0064) lists the CID 7050 codes of the profile and its options.

This module works on pydicom datasets and files only; :func:`pseudonym_for` is the one function that uses
the database (the project's pseudonym map).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

PROFILE = ("DICOM PS3.15 E Basic Application Level Confidentiality Profile; Retain Longitudinal Temporal "
           "Information with Full Dates; Retain Patient Characteristics; Retain UIDs (bmdsite)")
# DeidentificationMethod (0012,0063) is LO (64 characters at most).
METHOD_SHORT = "PS3.15 Basic Profile+RtnLongFullDates+RtnPatChars+RtnUIDs"
# CID 7050 De-identification Method codes (DCM scheme).
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113110", "Retain UIDs Option"),
)

REPLACE_WITH_PSEUDONYM = ("PatientID", "PatientName")
EMPTY = ("PatientBirthDate", "AccessionNumber", "StudyID", "ReferringPhysicianName")
REMOVE = (
    # patient identity, relatives, addresses, insurance
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthTime", "PatientAddress", "PatientTelephoneNumbers",
    "IssuerOfPatientID", "MedicalRecordLocator", "MilitaryRank", "BranchOfService", "Occupation",
    "CountryOfResidence", "RegionOfResidence", "PatientReligiousPreference", "EthnicGroup",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization",
    "AdditionalPatientHistory", "PatientComments", "MedicalAlerts", "Allergies", "PregnancyStatus",
    "SmokingStatus", "LastMenstrualDate", "ReferencedPatientSequence", "PatientState",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "AdmissionID",
    # staff and places
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "StationName", "DeviceSerialNumber", "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence",
    "OperatorsName", "OperatorIdentificationSequence", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
    "RequestingPhysician", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ScheduledPerformingPhysicianName", "ContentCreatorName",
    "PerformedLocation", "ScheduledProcedureStepLocation", "RequestingService", "DetectorID",
    # free text that may name people
    "StudyDescription", "SeriesDescription", "ImageComments", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "PerformedProcedureStepID", "ScheduledProcedureStepDescription",
    "RequestAttributesSequence", "ProtocolName", "DerivationDescription", "AcquisitionComments",
    "StudyComments", "InterpretationText", "TextString", "TextValue",
)
# Repeating groups (no pydicom keyword): curves (50xx,xxxx) whole, overlay data and comments (60xx,3000/4000),
# which can burn in text.
KEEP_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight")


@dataclass
class DeidRecord:
    """What :func:`deidentify` did to one dataset (no PHI inside: only keywords and counts)."""

    removed: list = field(default_factory=list)
    emptied: list = field(default_factory=list)
    replaced: list = field(default_factory=list)
    private_removed: int = 0
    other_names_removed: int = 0
    age_from_birth_date: bool = False


def real_patient_id(ds) -> str:
    """PatientID (0010,0020) as sent by the PACS (PHI: goes to the pseudonym map only)."""
    return str(ds.get("PatientID", "") or "").strip()


def _age_string(birth: str, at: str) -> str:
    """DICOM AS value ("065Y") from two DA values, or "" when either is unusable."""
    import datetime as dt

    try:
        b = dt.datetime.strptime(birth[:8], "%Y%m%d").date()
        a = dt.datetime.strptime(at[:8], "%Y%m%d").date()
    except (TypeError, ValueError):
        return ""
    years = a.year - b.year - ((a.month, a.day) < (b.month, b.day))
    return f"{years:03d}Y" if 0 <= years <= 999 else ""


def deidentify(ds, *, pseudonym: str) -> DeidRecord:
    """De-identify ``ds`` in place (see the module docstring for the attribute table).

    Parameters
    ----------
    ds : pydicom.Dataset
        A full instance (file meta included when present).
    pseudonym : str
        Written to PatientID and PatientName; "" leaves them empty (anonymous source without a patient id).

    Returns
    -------
    DeidRecord
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    record = DeidRecord()
    # PatientAge (kept) is derived from the birth date before the birth date goes, when the source lacks it.
    if not str(ds.get("PatientAge", "") or "").strip() and ds.get("PatientBirthDate"):
        age = _age_string(str(ds.PatientBirthDate), str(ds.get("StudyDate", "") or ds.get("SeriesDate", "") or ""))
        if age:
            ds.PatientAge = age
            record.age_from_birth_date = True

    for keyword in REPLACE_WITH_PSEUDONYM:
        setattr(ds, keyword, pseudonym)
        record.replaced.append(keyword)
    for keyword in EMPTY:
        if keyword in ds:
            ds[keyword].value = ""
            record.emptied.append(keyword)
    for keyword in REMOVE:
        if keyword in ds:
            del ds[keyword]
            record.removed.append(keyword)

    for elem in list(ds):
        group, element = elem.tag.group, elem.tag.element
        if 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and element in (0x3000, 0x4000)):
            del ds[elem.tag]
            record.removed.append(f"({group:04X},{element:04X})")

    # Private elements anywhere (also inside sequences), then any person name the table did not name.
    before = _count_private(ds)
    ds.remove_private_tags()
    record.private_removed = before

    def strip_names(dataset, top):
        for elem in list(dataset):
            if elem.VR == "SQ":
                for item in elem.value:
                    item.remove_private_tags()
                    strip_names(item, False)
            elif elem.VR == "PN" and not (top and elem.keyword in REPLACE_WITH_PSEUDONYM + EMPTY):
                del dataset[elem.tag]
                record.other_names_removed += 1

    strip_names(ds, True)

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD_SHORT
    codes = Sequence()
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    return record


def _count_private(ds) -> int:
    n = 0
    for elem in ds:
        if elem.tag.is_private:
            n += 1
        elif elem.VR == "SQ":
            n += sum(_count_private(item) for item in elem.value)
    return n


def deidentify_file(path, *, pseudonym: str) -> tuple[str, DeidRecord]:
    """De-identify one DICOM file in place; returns (the real PatientID it had, the record).

    The pixel data is copied as stored (no decompression), so compressed instances stay bit-identical.
    """
    import pydicom

    path = Path(path)
    ds = pydicom.dcmread(path)
    real = real_patient_id(ds)
    record = deidentify(ds, pseudonym=pseudonym)
    ds.save_as(path)
    return real, record


def new_pseudonym() -> str:
    """A random pseudonym with no relation to the real id (64 bits)."""
    return "PX" + secrets.token_hex(8).upper()


def pseudonym_for(project, real_id: str, *, user=None, preferred: str = ""):
    """The project pseudonym of ``real_id`` (created in the pseudonym map if new).

    Parameters
    ----------
    project : studies.models.Project
    real_id : str
        PatientID from the PACS; "" (anonymous data) maps to "" and creates nothing.
    preferred : str
        The registry pseudonym of the exam the series is being linked to. A new mapping takes it; an
        existing mapping to another pseudonym is a conflict (the exam link or the data is wrong).

    Raises
    ------
    ValueError
        On a conflict between the map and ``preferred`` (message without the real id).
    """
    from django.db import IntegrityError, transaction

    from .models import PseudonymMap

    if not real_id:
        return ""
    existing = PseudonymMap.objects.filter(project=project, real_patient_id=real_id).first()
    if existing is None:
        try:
            with transaction.atomic():
                existing = PseudonymMap.objects.create(project=project, real_patient_id=real_id,
                                                       pseudonym=preferred or new_pseudonym(), created_by=user)
        except IntegrityError:
            # Another job mapped the same patient meanwhile, or ``preferred`` belongs to another real id.
            existing = PseudonymMap.objects.filter(project=project, real_patient_id=real_id).first()
            if existing is None:
                raise ValueError(f"pseudonym {preferred} already belongs to another patient of project "
                                 f"{project}; check the exam this series is linked to") from None
    if preferred and existing.pseudonym != preferred:
        raise ValueError(f"the series' patient is already known in project {project} as {existing.pseudonym}, "
                         f"not {preferred}; check the exam this series is linked to")
    return existing.pseudonym
