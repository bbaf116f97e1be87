//! The S3 Object Lock archive (moto).
