//! # ops — operator tools (skeleton)
//!
//! Will own `bgfctl` (cluster status, sessions, failover drills with reports,
//! planned switchover, log inspection) and the OpenStack deployment files
//! under `ops/openstack/`.
//!
//! It does not own any runtime behaviour of the BGF: it talks to the admin
//! API of running `bgf` processes.
//!
//! Status: skeleton; arrives with issues 6 and 8.
