//! The EMF lines of the metrics contract (issue 16), as the functions print them:
//! the fixtures every test of this module starts from.

/// The message function's line: 3 publishes answered `ok`.
pub(super) const PUBLISHES_LINE: &str = r#"{"_aws":{"Timestamp":1796217683420,"CloudWatchMetrics":[{"Namespace":"deltacast","Dimensions":[["service","function","outcome"]],"Metrics":[{"Name":"Publishes","Unit":"Count"}]}]},"service":"deltacast","function":"message","outcome":"ok","Publishes":3}"#;

/// The fan-out's line: 40 deliveries, one batch of 4 records that lagged 812 ms.
pub(super) const FANOUT_LINE: &str = r#"{"_aws":{"Timestamp":1796217683420,"CloudWatchMetrics":[{"Namespace":"deltacast","Dimensions":[["service","function"]],"Metrics":[{"Name":"Deliveries","Unit":"Count"},{"Name":"FanoutLag","Unit":"Milliseconds"},{"Name":"BatchSize","Unit":"Count"}]}]},"service":"deltacast","function":"fanout","Deliveries":40,"FanoutLag":[812.0],"BatchSize":[4.0]}"#;
