//! Integration tests of fkd-detect over the published weights and real photos in `$FKD_DATA`.
#![allow(clippy::unwrap_used)]

mod reference;
