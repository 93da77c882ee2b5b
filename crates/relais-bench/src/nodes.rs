//! Clients spread over several server addresses: the nodes of a relais
//! cluster (`bench/cluster.sh`).
//!
//! Client `i` of a run over `k` addresses connects to address `i mod k`
//! (round-robin), so with two nodes the even clients are on the first and
//! the odd ones on the second, and every node's share differs from the
//! others' by at most one. The payload carries its sender's index, so a
//! recipient knows from the index alone whether a delivery came from a
//! member of its own node or crossed the backplane: the report splits
//! latency and deliveries into same-node and cross-node pairs
//! ([`crate::report::ClusterReport`]).

/// The node (index into the address list) client `client` connects to,
/// among `nodes` (at least 1).
pub fn node_of(client: usize, nodes: usize) -> usize {
    client % nodes.max(1)
}

/// How many of `clients` clients each of `nodes` nodes gets.
pub fn clients_per_node(clients: usize, nodes: usize) -> Vec<usize> {
    let nodes = nodes.max(1);
    (0..nodes)
        .map(|j| clients / nodes + usize::from(j < clients % nodes))
        .collect()
}

/// Ordered (sender, recipient) pairs of `clients` clients on `nodes` nodes
/// whose two ends are on the same node, each client's pair with itself
/// included (the echo is on): the sum over nodes of (clients there)².
pub fn same_node_pairs(clients: usize, nodes: usize) -> u64 {
    clients_per_node(clients, nodes)
        .into_iter()
        .map(|c| (c as u64) * (c as u64))
        .sum()
}

/// A comma-separated list of `host:port` addresses (spaces around them
/// allowed). Empty entries and repeated addresses are errors: each address
/// is one node, and a node given twice would be two shares of clients on
/// one node counted as "cross-node".
pub fn parse_servers(list: &str) -> Result<Vec<String>, String> {
    let mut servers: Vec<String> = Vec::new();
    for part in list.split(',') {
        let addr = part.trim();
        if addr.is_empty() {
            return Err(format!("empty address in {list:?}"));
        }
        if !addr.contains(':') {
            return Err(format!("{addr:?} is not host:port"));
        }
        if servers.iter().any(|s| s == addr) {
            return Err(format!("{addr} is given twice"));
        }
        servers.push(addr.to_owned());
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_go_round_robin() {
        let of: Vec<usize> = (0..7).map(|i| node_of(i, 2)).collect();
        assert_eq!(of, [0, 1, 0, 1, 0, 1, 0]);
        let of: Vec<usize> = (0..7).map(|i| node_of(i, 3)).collect();
        assert_eq!(of, [0, 1, 2, 0, 1, 2, 0]);
        // One node (or none given): everyone on it.
        assert!((0..5).all(|i| node_of(i, 1) == 0 && node_of(i, 0) == 0));
    }

    #[test]
    fn shares_differ_by_at_most_one_and_match_node_of() {
        for clients in 0..40 {
            for nodes in 1..5 {
                let shares = clients_per_node(clients, nodes);
                assert_eq!(shares.len(), nodes);
                assert_eq!(shares.iter().sum::<usize>(), clients);
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{clients} on {nodes}: {shares:?}");
                for (j, &share) in shares.iter().enumerate() {
                    let counted = (0..clients).filter(|&i| node_of(i, nodes) == j).count();
                    assert_eq!(counted, share, "{clients} on {nodes}, node {j}");
                }
            }
        }
        assert_eq!(clients_per_node(101, 2), [51, 50]);
    }

    #[test]
    fn same_node_pairs_count_the_echo() {
        // 10 clients on 2 nodes: 5² + 5² ordered pairs of the 100 on one
        // node (10 of them a client and itself), 50 crossing.
        assert_eq!(same_node_pairs(10, 2), 50);
        assert_eq!(same_node_pairs(10, 1), 100);
        assert_eq!(same_node_pairs(3, 2), 4 + 1);
        // Brute force agrees.
        for clients in 0..20 {
            for nodes in 1..4 {
                let brute = (0..clients)
                    .flat_map(|s| (0..clients).map(move |r| (s, r)))
                    .filter(|&(s, r)| node_of(s, nodes) == node_of(r, nodes))
                    .count() as u64;
                assert_eq!(same_node_pairs(clients, nodes), brute);
            }
        }
    }

    #[test]
    fn parses_server_lists() {
        assert_eq!(
            parse_servers("127.0.0.1:1, 127.0.0.1:2").unwrap(),
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(parse_servers("h:7").unwrap(), ["h:7"]);
        assert!(parse_servers("").is_err());
        assert!(parse_servers("a:1,,b:2").is_err());
        assert!(parse_servers("a:1,a:1").is_err());
        assert!(parse_servers("localhost").is_err());
    }
}
