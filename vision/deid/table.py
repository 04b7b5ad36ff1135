"""DICOM PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes), as data.

Source: the standard's Table E.1-1 as extracted into `standard/confidentiality_profile_attributes
.json` of github.com/innolitics/dicom-standard (commit 0d01bf11dfc1d0b73b6df85bbf6e1764d3c558a3),
which parses the DICOM Standard's current edition at that commit (it carries the 2023-2024
additions: Flow Identifier, Multiplex Group UID, Impedance Measurement DateTime, Dosimetric
Objective UID); re-typed here as one CSV row per attribute, no row added or changed. The private
attributes row ("(GGGG,EEEE) where GGGG is odd": X, Retain Safe Private C) is applied in code
(`vision.deid.profile`), not listed.

Columns: tag (8 hex digits; x = any hex digit in the repeating groups 50xx / 60xx), in standard
composite IODs (Y/N), then the action codes of the Basic Profile and of each option column:
safe = Retain Safe Private, uids = Retain UIDs, dev = Retain Device Identity, inst = Retain
Institution Identity, pat = Retain Patient Characteristics, full = Retain Longitudinal Temporal
Information with Full Dates, mod = ... with Modified Dates, desc = Clean Descriptors,
struct = Clean Structured Content, graph = Clean Graphics; an empty cell: the option says nothing
(the Basic Profile's code applies). Last column: the attribute's name in the table.
"""

COLUMNS = (
    "tag", "iod", "basic", "safe", "uids", "dev", "inst", "pat", "full", "mod", "desc", "struct",
    "graph", "name",
)  # fmt: skip

TABLE_E1_1 = """\
00080050,Y,Z,,,,,,,,,,,Accession Number
00184000,N,X,,,,,,,,C,,,Acquisition Comments
00400555,Y,X/Z,,,,,,,,,C,,Acquisition Context Sequence
00080022,Y,X/Z,,,,,,K,C,,,,Acquisition Date
0008002A,Y,X/Z/D,,,,,,K,C,,,,Acquisition DateTime
00181400,Y,X/D,,,,,,,,C,,,Acquisition Device Processing Description
001811BB,Y,D,,,,,,,,C,,,Acquisition Field Of View Label
00189424,Y,X,,,,,,,,C,,,Acquisition Protocol Description
00080032,Y,X/Z,,,,,,K,C,,,,Acquisition Time
00404035,N,X,,,,,,,,,,,Actual Human Performers Sequence
001021B0,Y,X,,,,,,,,C,,,Additional Patient History
0040A353,N,X,,,,,,,,,,,Address (Trial)
00380010,Y,X,,,,,,,,,,,Admission ID
00380020,N,X,,,,,,K,C,,,,Admitting Date
00081084,Y,X,,,,,,,,C,,,Admitting Diagnoses Code Sequence
00081080,Y,X,,,,,,,,C,,,Admitting Diagnoses Description
00380021,N,X,,,,,,K,C,,,,Admitting Time
00001000,N,X,,K,,,,,,,,,Affected SOP Instance UID
00102110,N,X,,,,,C,,,C,,,Allergies
40000010,N,X,,,,,,,,,,,Arbitrary
0040A078,Y,X,,,,,,,,,,,Author Observer Sequence
22000005,Y,X/Z,,,,,,,,,,,Barcode Value
300A00C3,Y,X,,,,,,,,C,,,Beam Description
300A00DD,Y,X,,,,,,,,C,,,Bolus Description
00101081,N,X,,,,,,,,,,,Branch of Service
0016004D,Y,X,,,,,,,,,,,Camera Owner Name
00181007,Y,X,,,K,,,,,,,,Cassette ID
00120060,Y,Z,,,,K,,,,,,,Clinical Trial Coordinating Center Name
00120082,Y,X,,,,,,,,,,,Clinical Trial Protocol Ethics Committee Approval Number
00120081,Y,D,,,,K,,,,,,,Clinical Trial Protocol Ethics Committee Name
00120020,Y,D,,,,,,,,,,,Clinical Trial Protocol ID
00120021,Y,Z,,,,,,,,,,,Clinical Trial Protocol Name
00120072,Y,X,,,,,,,,C,,,Clinical Trial Series Description
00120071,Y,X,,,,,,,,,,,Clinical Trial Series ID
00120030,Y,Z,,,,K,,,,,,,Clinical Trial Site ID
00120031,Y,Z,,,,K,,,,,,,Clinical Trial Site Name
00120010,Y,D,,,,,,,,,,,Clinical Trial Sponsor Name
00120040,Y,D,,,,,,,,,,,Clinical Trial Subject ID
00120042,Y,D,,,,,,,,,,,Clinical Trial Subject Reading ID
00120051,Y,X,,,,,,,,C,,,Clinical Trial Time Point Description
00120050,Y,Z,,,,,,,,,,,Clinical Trial Time Point ID
00400310,Y,X,,,,,,,,C,,,Comments on Radiation Dose
00400280,Y,X,,,,,,,,C,,,Comments on the Performed Procedure Step
300A02EB,Y,X,,,,,,,,C,,,Compensator Description
00209161,Y,U,,K,,,,,,,,,Concatenation UID
3010000F,Y,Z,,,,,,,,C,,,Conceptual Volume Combination Description
30100017,Y,Z,,,,,,,,C,,,Conceptual Volume Description
30100006,Y,U,,K,,,,,,,,,Conceptual Volume UID
00403001,N,X,,,,,,,,,,,Confidentiality Constraint on Patient Data Description
30100013,Y,U,,K,,,,,,,,,Constituent Conceptual Volume UID
0008009C,Y,Z,,,,,,,,,,,Consulting Physician's Name
0008009D,Y,X,,,,,,,,,,,Consulting Physician Identification Sequence
0050001B,Y,X,,,,,,,,,,,Container Component ID
0040051A,Y,X,,,,,,,,C,,,Container Description
00400512,Y,D,,,,,,,,,,,Container Identifier
00700086,Y,X,,,,,,,,,,,Content Creator's Identification Code Sequence
00700084,Y,Z/D,,,,,,,,,,,Content Creator's Name
00080023,Y,Z/D,,,,,,K,C,,,,Content Date
0040A730,Y,D,,,,,,,,,C,,Content Sequence
00080033,Y,Z/D,,,,,,K,C,,,,Content Time
00180010,Y,Z/D,,,,,,,,C,,,Contrast/Bolus Agent
0018A003,Y,X,,,,,,,,C,,,Contribution Description
00102150,N,X,,,,,,,,,,,Country of Residence
0040A307,N,X,,,,,,,,,,,Current Observer (Trial)
00380300,N,X,,,,,,,,,,,Current Patient Location
50xxxxxx,N,X,,,,,,,,,,C,Curve Data
00080025,Y,X,,,,,,K,C,,,,Curve Date
00080035,Y,X,,,,,,K,C,,,,Curve Time
0040A07C,Y,X,,,,,,,,,,,Custodial Organization Sequence
FFFCFFFC,Y,X,,,,,,,,,,,Data Set Trailing Padding
0018937F,Y,X,,,,,,,,C,,,Decomposition Description
00082111,Y,X,,,,,,,,C,,,Derivation Description
0018700A,Y,X/D,,,K,,,,,,,,Detector ID
3010001B,Y,Z,,,,,,,,,,,Device Alternate Identifier
00500020,Y,X,,,K,,,,,,,,Device Description
3010002D,Y,D,,,K,,,,,,,,Device Label
00181000,Y,X/Z/D,,,K,,,,,,,,Device Serial Number
0016004B,Y,X,,,,,,,,C,,,Device Setting Description
00181002,Y,U,,K,K,,,,,,,,Device UID
FFFAFFFA,Y,X,,,,,,,,,,,Digital Signatures Sequence
04000100,Y,U,,,,,,,,,,,Digital Signature UID
00209164,Y,U,,K,,,,,,,,,Dimension Organization UID
00380040,N,X,,,,,,,,C,,,Discharge Diagnosis Description
4008011A,N,X,,,,,,,,,,,Distribution Address
40080119,N,X,,,,,,,,,,,Distribution Name
300A0016,Y,X,,,,,,,,C,,,Dose Reference Description
300A0013,Y,U,,K,,,,,,,,,Dose Reference UID
3010006E,Y,U,,K,,,,,,,,,Dosimetric Objective UID
00189517,Y,X/D,,,,,,K,C,,,,End Acquisition DateTime
30100037,Y,X,,,,,,,,C,,,Entity Description
30100035,Y,D,,,,,,,,C,,,Entity Label
30100038,Y,D,,,,,,,,C,,,Entity Long Label
30100036,Y,X,,,,,,,,C,,,Entity Name
300A0676,Y,X,,,,,,,,C,,,Equipment Frame of Reference Description
00102160,Y,X,,,,,K,,,,,,Ethnic Group
00404011,N,X,,,,,,K,C,,,,Expected Completion DateTime
00080058,N,U,,K,,,,,,,,,Failed SOP Instance UID List
0070031A,Y,U,,K,,,,,,,,,Fiducial UID
00402017,Y,Z,,,,,,,,,,,Filler Order Number / Imaging Service Request
30080054,Y,X/D,,,,,,K,C,,,,First Treatment Date
300A0196,Y,X,,,,,,,,C,,,Fixation Device Description
00340002,Y,D,,,,,,,,,,,Flow Identifier
00340001,Y,D,,,,,,,,,,,Flow Identifier Sequence
3010007F,Y,Z,,,,,,,,C,,,Fractionation Notes
300A0072,Y,X,,,,,,,,C,,,Fraction Group Description
00209158,Y,X,,,,,,,,C,,,Frame Comments
00200052,Y,U,,K,,,,,,,,,Frame of Reference UID
00340007,Y,D,,,,,,K,C,,,,Frame Origin Timestamp
00181008,Y,X,,,K,,,,,,,,Gantry ID
00181005,Y,X,,,K,,,,,,,,Generator ID
00160076,Y,X,,,,,,,,,,,GPS Altitude
00160075,Y,X,,,,,,,,,,,GPS Altitude Ref
0016008C,Y,X,,,,,,,,,,,GPS Area Information
0016008D,Y,X,,,,,,K,C,,,,GPS Date Stamp
00160088,Y,X,,,,,,,,,,,GPS Dest Bearing
00160087,Y,X,,,,,,,,,,,GPS Dest Bearing Ref
0016008A,Y,X,,,,,,,,,,,GPS Dest Distance
00160089,Y,X,,,,,,,,,,,GPS Dest Distance Ref
00160084,Y,X,,,,,,,,,,,GPS Dest Latitude
00160083,Y,X,,,,,,,,,,,GPS Dest Latitude Ref
00160086,Y,X,,,,,,,,,,,GPS Dest Longitude
00160085,Y,X,,,,,,,,,,,GPS Dest Longitude Ref
0016008E,Y,X,,,,,,,,,,,GPS Differential
0016007B,Y,X,,,,,,,,,,,GPS DOP
00160081,Y,X,,,,,,,,,,,GPS Img Direction
00160080,Y,X,,,,,,,,,,,GPS Img Direction Ref
00160072,Y,X,,,,,,,,,,,GPS Latitude
00160071,Y,X,,,,,,,,,,,GPS Latitude Ref
00160074,Y,X,,,,,,,,,,,GPS Longitude
00160073,Y,X,,,,,,,,,,,GPS Longitude Ref
00160082,Y,X,,,,,,,,,,,GPS Map Datum
0016007A,Y,X,,,,,,,,,,,GPS Measure Mode
0016008B,Y,X,,,,,,,,,,,GPS Processing Method
00160078,Y,X,,,,,,,,,,,GPS Satellites
0016007D,Y,X,,,,,,,,,,,GPS Speed
0016007C,Y,X,,,,,,,,,,,GPS Speed Ref
00160079,Y,X,,,,,,,,,,,GPS Status
00160077,Y,X,,,,,,,,,,,GPS Time Stamp
0016007F,Y,X,,,,,,,,,,,GPS Track
0016007E,Y,X,,,,,,,,,,,GPS Track Ref
00160070,Y,X,,,,,,,,,,,GPS Version ID
00700001,Y,D,,,,,,,,,,C,Graphic Annotation Sequence
00404037,N,X,,,,,,,,,,,Human Performer's Name
00404036,N,X,,,,,,,,,,,Human Performer's Organization
00880200,Y,X,,,,,,,,,,,Icon Image Sequence
00084000,N,X,,,,,,,,C,,,Identifying Comments
00204000,Y,X,,,,,,,,C,,,Image Comments
00284000,N,X,,,,,,,,,,,Image Presentation Comments
00402400,N,X,,,,,,,,C,,,Imaging Service Request Comments
003A0314,Y,D,,,,,,K,C,,,,Impedance Measurement DateTime
40080300,N,X,,,,,,,,C,,,Impressions
00080015,Y,X,,,,,,K,C,,,,Instance Coercion DateTime
00080014,Y,U,,K,,,,,,,,,Instance Creator UID
04000600,Y,X,,,,,,,,,,,Instance Origin Status
00080081,Y,X,,,,K,,,,,,,Institution Address
00081040,Y,X,,,,K,,,,,,,Institutional Department Name
00081041,Y,X,,,,K,,,,,,,Institutional Department Type Code Sequence
00080082,Y,X/Z/D,,,,K,,,,,,,Institution Code Sequence
00080080,Y,X/Z/D,,,,K,,,,,,,Institution Name
00101050,N,X,,,,,,,,,,,Insurance Plan Identification
3010004D,Y,X/D,,,,,,K,C,,,,Intended Phase End Date
3010004C,Y,X/D,,,,,,K,C,,,,Intended Phase Start Date
00401011,N,X,,,,,,,,,,,Intended Recipients of Results Identification Sequence
300A0741,Y,D,,,,,,K,C,,,,Interlock DateTime
300A0742,Y,D,,,,,,,,C,,,Interlock Description
300A0783,Y,D,,,,,,,,C,,,Interlock Origin Description
40080111,N,X,,,,,,,,,,,Interpretation Approver Sequence
4008010C,N,X,,,,,,,,,,,Interpretation Author
40080115,N,X,,,,,,,,C,,,Interpretation Diagnosis Description
40080202,N,X,,,,,,,,,,,Interpretation ID Issuer
40080102,N,X,,,,,,,,,,,Interpretation Recorder
4008010B,N,X,,,,,,,,C,,,Interpretation Text
4008010A,N,X,,,,,,,,,,,Interpretation Transcriber
00083010,Y,U,,K,,,,,,,,,Irradiation Event UID
00380011,Y,X,,,,,,,,,,,Issuer of Admission ID
00380014,Y,X,,,,,,,,,,,Issuer of Admission ID Sequence
00100021,Y,X,,,,,,,,,,,Issuer of Patient ID
00380061,Y,X,,,,,,,,,,,Issuer of Service Episode ID
00380064,Y,X,,,,,,,,,,,Issuer of Service Episode ID Sequence
00400513,Y,Z,,,,,,,,,,,Issuer of the Container Identifier Sequence
00400562,Y,Z,,,,,,,,,,,Issuer of the Specimen Identifier Sequence
22000002,Y,X/Z,,,,,,,,C,,,Label Text
00281214,N,U,,K,,,,,,,,,Large Palette Color Lookup Table UID
001021D0,N,X,,,,,,K,C,,,,Last Menstrual Date
0016004F,Y,X,,,K,,,,,,,,Lens Make
00160050,Y,X,,,K,,,,,,,,Lens Model
00160051,Y,X,,,K,,,,,,,,Lens Serial Number
0016004E,Y,X,,,K,,,,,,,,Lens Specification
00500021,Y,X,,,,,,,,C,,,Long Device Description
04000404,Y,X,,,,,,,,,,,MAC
0016002B,Y,X,,,,,,,,C,,,Maker Note
0018100B,Y,U,,K,K,,,,,,,,Manufacturer's Device Class UID
30100043,Y,Z,,,K,,,,,,,,Manufacturer's Device Identifier
00020003,N,U,,K,,,,,,,,,Media Storage SOP Instance UID
00102000,N,X,,,,,,,,C,,,Medical Alerts
00101090,N,X,,,,,,,,,,,Medical Record Locator
00101080,N,X,,,,,,,,,,,Military Rank
04000550,N,X,,,,,,,,,,,Modified Attributes Sequence
00203406,N,X,,,,,,,,,,,Modified Image Description
00203401,N,X,,,,,,,,,,,Modifying Device ID
30080056,Y,X/D,,,,,,K,C,,,,Most Recent Treatment Date
0018937B,Y,X,,,,,,,,C,,,Multi-energy Acquisition Description
003A0310,Y,U,,K,,,,,,,,,Multiplex Group UID
00081060,Y,X,,,,,,,,,,,Name of Physician(s) Reading Study
00401010,N,X,,,,,,,,,,,Names of Intended Recipients of Results
04000551,N,X,,,,,,,,,,,Nonconforming Modified Attributes Sequence
04000552,N,X,,,,,,,,,,,Nonconforming Data Element Value
0040A192,N,X,,,,,,K,C,,,,Observation Date (Trial)
0040A402,N,U,,K,,,,,,,,,Observation Subject UID (Trial)
0040A193,N,X,,,,,,K,C,,,,Observation Time (Trial)
0040A171,Y,U,,K,,,,,,,,,Observation UID
00102180,Y,X,,,,,,,,C,,,Occupation
00081072,Y,X/D,,,,,,,,,,,Operator Identification Sequence
00081070,Y,X/Z/D,,,,,,,,,,,Operators' Name
00402010,N,X,,,,,,,,,,,Order Callback Phone Number
00402011,N,X,,,,,,,,,,,Order Callback Telecom Information
00402008,N,X,,,,,,,,,,,Order Entered By
00402009,N,X,,,,,,,,,,,Order Enterer's Location
04000561,Y,X,,,,,,,,,,,Original Attributes Sequence
00101000,Y,X,,,,,,,,,,,Other Patient IDs
00101002,Y,X,,,,,,,,,,,Other Patient IDs Sequence
00101001,Y,X,,,,,,,,,,,Other Patient Names
60xx4000,N,X,,,,,,,,,,C,Overlay Comments
60xx3000,Y,X,,,,,,,,,,C,Overlay Data
00080024,Y,X,,,,,,K,C,,,,Overlay Date
00080034,Y,X,,,,,,K,C,,,,Overlay Time
300A0760,Y,D,,,,,,K,C,,,,Override DateTime
00281199,Y,U,,K,,,,,,,,,Palette Color Lookup Table UID
0040A07A,Y,X,,,,,,,,,,,Participant Sequence
00101040,N,X,,,,,,,,,,,Patient's Address
00101010,Y,X,,,,,K,,,,,,Patient's Age
00100030,Y,Z,,,,,,,,,,,Patient's Birth Date
00101005,N,X,,,,,,,,,,,Patient's Birth Name
00100032,Y,X,,,,,,,,,,,Patient's Birth Time
00380400,N,X,,,,,,,,,,,Patient's Institution Residence
00100050,Y,X,,,,,,,,,,,Patient's Insurance Plan Code Sequence
00101060,N,X,,,,,,,,,,,Patient's Mother's Birth Name
00100010,Y,Z,,,,,,,,,,,Patient's Name
00100101,Y,X,,,,,,,,,,,Patient's Primary Language Code Sequence
00100102,Y,X,,,,,,,,,,,Patient's Primary Language Modifier Code Sequence
001021F0,N,X,,,,,,,,,,,Patient's Religious Preference
00100040,Y,Z,,,,,K,,,,,,Patient's Sex
00102203,Y,X/Z,,,,,K,,,,,,Patient's Sex Neutered
00101020,Y,X,,,,,K,,,,,,Patient's Size
00102155,N,X,,,,,,,,,,,Patient's Telecom Information
00102154,N,X,,,,,,,,,,,Patient's Telephone Numbers
00101030,Y,X,,,,,K,,,,,,Patient's Weight
00104000,Y,X,,,,,,,,C,,,Patient Comments
00100020,Y,Z,,,,,,,,,,,Patient ID
300A0650,Y,U,,K,,,,,,,,,Patient Setup UID
00380500,N,X,,,,,C,,,C,,,Patient State
00401004,N,X,,,,,,,,,,,Patient Transport Arrangements
00400243,N,X,,,,,,,,,,,Performed Location
00400254,Y,X,,,,,,,,C,,,Performed Procedure Step Description
00400250,Y,X,,,,,,K,C,,,,Performed Procedure Step End Date
00404051,N,X,,,,,,K,C,,,,Performed Procedure Step End DateTime
00400251,Y,X,,,,,,K,C,,,,Performed Procedure Step End Time
00400253,Y,X,,,,,,,,,,,Performed Procedure Step ID
00400244,Y,X,,,,,,K,C,,,,Performed Procedure Step Start Date
00404050,N,X,,,,,,K,C,,,,Performed Procedure Step Start DateTime
00400245,Y,X,,,,,,K,C,,,,Performed Procedure Step Start Time
00400241,N,X,,,K,,,,,,,,Performed Station AE Title
00404030,N,X,,,K,,,,,,,,Performed Station Geographic Location Code Sequence
00400242,N,X,,,K,,,,,,,,Performed Station Name
00404028,N,X,,,K,,,,,,,,Performed Station Name Code Sequence
00081050,Y,X,,,,,,,,,,,Performing Physician's Name
00081052,Y,X,,,,,,,,,,,Performing Physician Identification Sequence
00401102,Y,X,,,,,,,,,,,Person's Address
00401104,Y,X,,,,,,,,,,,Person's Telecom Information
00401103,Y,X,,,,,,,,,,,Person's Telephone Numbers
00401101,Y,D,,,,,,,,,,,Person Identification Code Sequence
0040A123,Y,D,,,,,,,,,,,Person Name
00081048,Y,X,,,,,,,,,,,Physician(s) of Record
00081049,Y,X,,,,,,,,,,,Physician(s) of Record Identification Sequence
00081062,Y,X,,,,,,,,,,,Physician(s) Reading Study Identification Sequence
40080114,N,X,,,,,,,,,,,Physician Approving Interpretation
00402016,Y,Z,,,,,,,,,,,Placer Order Number / Imaging Service Request
00181004,Y,X,,,K,,,,,,,,Plate ID
001021C0,N,X,,,,,K,,,,,,Pregnancy Status
00400012,N,X,,,,,C,,,,,,Pre-Medication
300A000E,Y,X,,,,,,,,C,,,Prescription Description
3010007B,Y,Z,,,,,,,,C,,,Prescription Notes
30100081,Y,Z,,,,,,,,C,,,Prescription Notes Sequence
00701101,Y,U,,K,,,,,,,,,Presentation Display Collection UID
00701102,Y,U,,K,,,,,,,,,Presentation Sequence Collection UID
30100061,Y,X,,,,,,,,C,,,Prior Treatment Dose Description
00404052,N,X,,,,,,K,C,,,,Procedure Step Cancellation DateTime
00181030,Y,X/D,,,,,,,,C,,,Protocol Name
300A0619,Y,D,,,,,,,,C,,,Radiation Dose Identification Label
300A0623,Y,D,,,,,,,,C,,,Radiation Dose In-Vivo Measurement Label
300A067D,Y,Z,,,,,,,,C,,,Radiation Generation Mode Description
300A067C,Y,D,,,,,,,,C,,,Radiation Generation Mode Label
300C0113,Y,X,,,,,,,,C,,,Reason for Omission Description
0040100A,Y,X,,,,,,,,C,,,Reason for Requested Procedure Code Sequence
00321030,N,X,,,,,,,,C,,,Reason for Study
3010005C,Y,Z,,,,,,,,C,,,Reason for Superseding
00402001,N,X,,,,,,,,C,,,Reason for the Imaging Service Request
00401002,Y,X,,,,,,,,C,,,Reason for the Requested Procedure
00321066,Y,X,,,,,,,,C,,,Reason for Visit
00321067,Y,X,,,,,,,,C,,,Reason for Visit Code Sequence
300A073A,Y,D,,,,,,K,C,,,,Recorded RT Control Point DateTime
3010000B,Y,U,,K,,,,,,,,,Referenced Conceptual Volume UID
04000402,Y,X,,,,,,,,,,,Referenced Digital Signature Sequence
300A0083,Y,U,,K,,,,,,,,,Referenced Dose Reference UID
3010006F,Y,U,,K,,,,,,,,,Referenced Dosimetric Objective UID
30100031,Y,U,,K,,,,,,,,,Referenced Fiducials UID
30060024,Y,U,,K,,,,,,,,,Referenced Frame of Reference UID
00404023,N,U,,K,,,,,,,,,Referenced General Purpose Scheduled Procedure Step Transaction UID
00081140,Y,X/Z/U*,,K,,,,,,,,,Referenced Image Sequence
0040A172,N,U,,K,,,,,,,,,Referenced Observation UID (Trial)
00380004,N,X,,,,,,,,,,,Referenced Patient Alias Sequence
00101100,Y,X,,,,,,,,,,,Referenced Patient Photo Sequence
00081120,Y,X,,X,,,,,,,,,Referenced Patient Sequence
00081111,Y,X/Z/D,,K,,,,,,,,,Referenced Performed Procedure Step Sequence
04000403,Y,X,,,,,,,,,,,Referenced SOP Instance MAC Sequence
00081155,Y,U,,K,,,,,,,,,Referenced SOP Instance UID
00041511,N,U,,K,,,,,,,,,Referenced SOP Instance UID in File
00081110,Y,X/Z,,K,,,,,,,,,Referenced Study Sequence
00080092,N,X,,,,,,,,,,,Referring Physician's Address
00080090,Y,Z,,,,,,,,,,,Referring Physician's Name
00080094,N,X,,,,,,,,,,,Referring Physician's Telephone Numbers
00080096,Y,X,,,,,,,,,,,Referring Physician Identification Sequence
00102152,N,X,,,,,,,,,,,Region of Residence
300600C2,N,U,,K,,,,,,,,,Related Frame of Reference UID
00400275,Y,X,,,,,,,,C,,,Request Attributes Sequence
00321070,N,X,,,,,,,,C,,,Requested Contrast Agent
00401400,N,X,,,,,,,,C,,,Requested Procedure Comments
00321060,Y,X/Z,,,,,,,,C,,,Requested Procedure Description
00401001,N,X,,,,,,,,,,,Requested Procedure ID
00401005,N,X,,,,,,,,,,,Requested Procedure Location
00189937,Y,X,,,,,,,,C,,,Requested Series Description
00001001,N,U,,K,,,,,,,,,Requested SOP Instance UID
00321032,N,X,,,,,,,,,,,Requesting Physician
00321033,N,X,,,,,,,,,,,Requesting Service
00189185,Y,X,,,,,,,,C,,,Respiratory Motion Compensation Technique Description
00102299,Y,X,,,,,,,,,,,Responsible Organization
00102297,Y,X,,,,,,,,,,,Responsible Person
40084000,N,X,,,,,,,,C,,,Results Comments
40080118,N,X,,,,,,,,,,,Results Distribution List Sequence
40080042,N,X,,,,,,,,,,,Results ID Issuer
300E0008,Y,X/Z,,,,,,,,,,,Reviewer Name
30060028,Y,X,,,,,,,,C,,,ROI Description
30060038,Y,X,,,,,,,,C,,,ROI Generation Description
300600A6,Y,Z,,,,,,,,,,,ROI Interpreter
30060026,Y,Z,,,,,,,,C,,,ROI Name
30060088,Y,X,,,,,,,,C,,,ROI Observation Description
30060085,Y,X,,,,,,,,C,,,ROI Observation Label
300A0615,Y,Z,,,,,,,,,,,RT Accessory Device Slot ID
300A0611,Y,Z,,,,,,,,,,,RT Accessory Holder Slot ID
3010005A,Y,Z,,,,,,,,C,,,RT Physician Intent Narrative
300A0006,Y,X/D,,,,,,K,C,,,,RT Plan Date
300A0004,Y,X,,,,,,,,C,,,RT Plan Description
300A0002,Y,D,,,,,,,,C,,,RT Plan Label
300A0003,Y,X,,,,,,,,C,,,RT Plan Name
300A0007,Y,X/D,,,,,,K,C,,,,RT Plan Time
30100054,Y,D,,,,,,,,C,,,RT Prescription Label
300A062A,Y,D,,,,,,,,C,,,RT Tolerance Set Label
30100056,Y,X/D,,,,,,,,C,,,RT Treatment Approach Label
3010003B,Y,U,,K,,,,,,,,,RT Treatment Phase UID
00404034,N,X,,,,,,,,,,,Scheduled Human Performers Sequence
0038001E,N,X,,,,,,,,,,,Scheduled Patient Institution Residence
00400006,N,X,,,,,,,,,,,Scheduled Performing Physician's Name
0040000B,N,X,,,,,,,,,,,Scheduled Performing Physician Identification Sequence
00400007,Y,X,,,,,,,,C,,,Scheduled Procedure Step Description
00400004,N,X,,,,,,K,C,,,,Scheduled Procedure Step End Date
00400005,N,X,,,,,,K,C,,,,Scheduled Procedure Step End Time
00404008,N,X,,,,,,K,C,,,,Scheduled Procedure Step Expiration DateTime
00400009,Y,X,,,,,,,,,,,Scheduled Procedure Step ID
00400011,N,X,,,K,,,,,,,,Scheduled Procedure Step Location
00404010,N,X,,,,,,K,C,,,,Scheduled Procedure Step Modification DateTime
00400002,N,X,,,,,,K,C,,,,Scheduled Procedure Step Start Date
00404005,N,X,,,,,,K,C,,,,Scheduled Procedure Step Start DateTime
00400003,N,X,,,,,,K,C,,,,Scheduled Procedure Step Start Time
00400001,N,X,,,K,,,,,,,,Scheduled Station AE Title
00404027,N,X,,,K,,,,,,,,Scheduled Station Geographic Location Code Sequence
00400010,N,X,,,K,,,,,,,,Scheduled Station Name
00404025,N,X,,,K,,,,,,,,Scheduled Station Name Code Sequence
00321020,N,X,,,K,,,,,,,,Scheduled Study Location
00321021,N,X,,,K,,,,,,,,Scheduled Study Location AE Title
00080021,Y,X/D,,,,,,K,C,,,,Series Date
0008103E,Y,X,,,,,,,,C,,,Series Description
0020000E,Y,U,,K,,,,,,,,,Series Instance UID
00080031,Y,X/D,,,,,,K,C,,,,Series Time
00380062,Y,X,,,,,,,,C,,,Service Episode Description
00380060,Y,X,,,,,,,,,,,Service Episode ID
300A01B2,Y,X,,,,,,,,C,,,Setup Technique Description
300A01A6,Y,X,,,,,,,,C,,,Shielding Device Description
004006FA,N,X,,,,,,,,,,,Slide Identifier
001021A0,N,X,,,,,K,,,,,,Smoking Status
00080018,Y,U,,K,,,,,,,,,SOP Instance UID
30100015,Y,U,,K,,,,,,,,,Source Conceptual Volume UID
0018936A,Y,D,,,,,,K,C,,,,Source End DateTime
00340005,Y,D,,,,,,,,,,,Source Identifier
00082112,Y,X/Z/U*,,K,,,,,,,,,Source Image Sequence
300A0216,Y,X,,,K,,,,,,,,Source Manufacturer
30080105,Y,X/Z,,,K,,,,,,,,Source Serial Number
00189369,Y,D,,,,,,K,C,,,,Source Start DateTime
00380050,N,X,,,,,C,,,,,,Special Needs
0040050A,N,X,,,,,,,,,,,Specimen Accession Number
00400602,Y,X,,,,,,,,C,,,Specimen Detailed Description
00400551,Y,D,,,,,,,,,,,Specimen Identifier
00400610,Y,Z,,,,,,,,,C,,Specimen Preparation Sequence
00400600,Y,X,,,,,,,,C,,,Specimen Short Description
00400554,Y,U,,K,,,,,,,,,Specimen UID
00189516,Y,X/D,,,,,,K,C,,,,Start Acquisition DateTime
00081010,Y,X/Z/D,,,K,,,,,,,,Station Name
00880140,Y,U,,K,,,,,,,,,Storage Media File-set UID
30060008,Y,Z,,,,,,K,C,,,,Structure Set Date
30060006,Y,X,,,,,,,,C,,,Structure Set Description
30060002,Y,D,,,,,,,,C,,,Structure Set Label
30060004,Y,X,,,,,,,,C,,,Structure Set Name
30060009,Y,X/D,,,,,,K,C,,,,Structure Set Time
00324000,N,X,,,,,,,,C,,,Study Comments
00080020,Y,Z,,,,,,K,C,,,,Study Date
00081030,Y,X,,,,,,,,C,,,Study Description
00200010,Y,Z,,,,,,,,,,,Study ID
00320012,N,X,,,,,,,,,,,Study ID Issuer
0020000D,Y,U,,K,,,,,,,,,Study Instance UID
00080030,Y,Z,,,,,,K,C,,,,Study Time
00200200,Y,U,,K,,,,,,,,,Synchronization Frame of Reference UID
00182042,Y,U,,K,,,,,,,,,Target UID
0040A354,N,X,,,,,,,,,,,Telephone Number (Trial)
0040DB0D,N,U,,K,,,,,,,,,Template Extension Creator UID
0040DB0C,N,U,,K,,,,,,,,,Template Extension Organization UID
40004000,N,X,,,,,,,,,,,Text Comments
20300020,N,X,,,,,,,,,,,Text String
00080201,Y,X,,,,,,K,C,,,,Timezone Offset From UTC
00880910,N,X,,,,,,,,,,,Topic Author
00880912,N,X,,,,,,,,,,,Topic Keywords
00880906,N,X,,,,,,,,,,,Topic Subject
00880904,N,X,,,,,,,,,,,Topic Title
00620021,Y,U,,K,,,,,,,,,Tracking UID
00081195,N,U,,K,,,,,,,,,Transaction UID
00185011,Y,X,,,K,,,,,,,,Transducer Identification Sequence
30080250,Y,X/D,,,,,,K,C,,,,Treatment Date
300A00B2,Y,X,,,K,,,,,,,,Treatment Machine Name
300A0608,Y,D,,,,,,,,C,,,Treatment Position Group Label
300A0609,Y,U,,K,,,,,,,,,Treatment Position Group UID
300A0700,Y,U,,K,,,,,,,,,Treatment Session UID
30100077,Y,D,,,,,,,,C,,,Treatment Site
3010007A,Y,Z,,,,,,,,C,,,Treatment Technique Notes
30080251,Y,X/D,,,,,,K,C,,,,Treatment Time
300A0736,Y,D,,,,,,K,C,,,,Treatment Tolerance Violation DateTime
300A0734,Y,D,,,,,,,,C,,,Treatment Tolerance Violation Description
0018100A,Y,X,,,K,,,,,,,,UDI Sequence
0040A124,Y,U,,,,,,,,,,,UID
00181009,Y,X,,,K,,,,,,,,Unique Device Identifier
30100033,Y,D,,,,,,,,C,,,User Content Label
30100034,Y,D,,,,,,,,C,,,User Content Long Label
0040A352,N,X,,,,,,,,,,,Verbal Source (Trial)
0040A358,N,X,,,,,,,,,,,Verbal Source Identifier Code Sequence (Trial)
0040A088,Y,Z,,,,,,,,,,,Verifying Observer Identification Code Sequence
0040A075,Y,D,,,,,,,,,,,Verifying Observer Name
0040A073,Y,D,,,,,,,,,,,Verifying Observer Sequence
0040A027,Y,D,,,,,,,,,,,Verifying Organization
00384000,N,X,,,,,,,,C,,,Visit Comments
00189371,Y,D,,,K,,,,,,,,X-Ray Detector ID
00189373,Y,X,,,K,,,,,,,,X-Ray Detector Label
00189367,Y,D,,,K,,,,,,,,X-Ray Source ID
"""
