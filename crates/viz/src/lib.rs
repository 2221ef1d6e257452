//! fkd-viz: the figures of the reports.
//!
//! Will own (issue "Parts 1 and 2"): landmarks drawn on images (truth blue, prediction red, with
//! the layout's contours), sample grids from the data loader, loss curves, the lr study,
//! conv1 filter grids and cumulative error curves, as PNG with no system fonts needed.
