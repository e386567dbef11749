//! The local index of shared names, matched by keywords.
//!
//! A Gnutella servent answers a Query from its own shared files: the query string is split
//! into keywords and a file matches when every keyword occurs among the keywords of its
//! name. Keywords are the lowercase alphanumeric runs of a string (`"Abbey-Road.flac"` →
//! `abbey`, `road`, `flac`). The index keeps an inverted map from keyword to names so a
//! lookup costs a few map probes rather than a scan — every node on a flood's path runs one.

use std::collections::{BTreeMap, BTreeSet};

/// Longest shared name accepted, in bytes (Gnutella clients cap file names at 255 bytes).
pub const MAX_NAME_LEN: usize = 255;

/// Splits `text` into keywords: lowercase runs of alphanumeric characters.
pub fn keywords(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
}

/// Why a name could not be shared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The name is longer than [`MAX_NAME_LEN`] bytes. The index is unchanged.
    #[error("name is {0} bytes, longer than {MAX_NAME_LEN}")]
    NameTooLong(usize),
    /// The name has no keyword, so no query could ever match it. The index is unchanged.
    #[error("name has no keywords")]
    NoKeywords,
    /// The index already holds its maximum number of names. The index is unchanged.
    #[error("index is full ({0} names)")]
    Full(usize),
}

/// A bounded keyword index of shared names.
#[derive(Debug, Clone)]
pub struct Index {
    capacity: usize,
    /// Shared names with a stable slot number each; freed slots are reused.
    names: Vec<Option<String>>,
    free: Vec<u32>,
    by_name: BTreeMap<String, u32>,
    by_keyword: BTreeMap<String, BTreeSet<u32>>,
}

impl Index {
    /// An empty index holding at most `capacity` names.
    pub fn new(capacity: usize) -> Index {
        Index {
            capacity,
            names: Vec::new(),
            free: Vec::new(),
            by_name: BTreeMap::new(),
            by_keyword: BTreeMap::new(),
        }
    }

    /// Number of shared names.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether nothing is shared.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Shares `name`. Sharing a name twice is a no-op that succeeds.
    pub fn insert(&mut self, name: &str) -> Result<(), IndexError> {
        if name.len() > MAX_NAME_LEN {
            return Err(IndexError::NameTooLong(name.len()));
        }
        if self.by_name.contains_key(name) {
            return Ok(());
        }
        let words: BTreeSet<String> = keywords(name).collect();
        if words.is_empty() {
            return Err(IndexError::NoKeywords);
        }
        if self.by_name.len() >= self.capacity {
            return Err(IndexError::Full(self.capacity));
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.names[s as usize] = Some(name.to_owned());
                s
            }
            None => {
                self.names.push(Some(name.to_owned()));
                (self.names.len() - 1) as u32
            }
        };
        self.by_name.insert(name.to_owned(), slot);
        for w in words {
            self.by_keyword.entry(w).or_default().insert(slot);
        }
        Ok(())
    }

    /// Stops sharing `name`; returns whether it was shared.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(slot) = self.by_name.remove(name) else {
            return false;
        };
        for w in keywords(name) {
            if let Some(set) = self.by_keyword.get_mut(&w) {
                set.remove(&slot);
                if set.is_empty() {
                    self.by_keyword.remove(&w);
                }
            }
        }
        self.names[slot as usize] = None;
        self.free.push(slot);
        true
    }

    /// Names matching every keyword of `terms` (keywords as produced by [`keywords`]),
    /// at most `limit` of them, in name order. No terms match nothing.
    pub fn search(&self, terms: &[String], limit: usize) -> Vec<String> {
        if terms.is_empty() || limit == 0 || self.is_empty() {
            return Vec::new();
        }
        // Start from the rarest keyword, then filter by the others.
        let mut sets = Vec::with_capacity(terms.len());
        for t in terms {
            match self.by_keyword.get(t) {
                Some(s) => sets.push(s),
                None => return Vec::new(),
            }
        }
        sets.sort_by_key(|s| s.len());
        let mut out: Vec<String> = sets[0]
            .iter()
            .filter(|slot| sets[1..].iter().all(|s| s.contains(slot)))
            .filter_map(|&slot| self.names[slot as usize].clone())
            .collect();
        out.sort();
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(s: &str) -> Vec<String> {
        keywords(s).collect()
    }

    #[test]
    fn matches_all_keywords_only() {
        let mut ix = Index::new(10);
        ix.insert("Abbey-Road.flac").unwrap();
        ix.insert("Abbey Road (remaster).mp3").unwrap();
        ix.insert("road trip.mp3").unwrap();
        assert_eq!(ix.search(&terms("abbey road"), 10).len(), 2);
        assert_eq!(
            ix.search(&terms("ROAD mp3"), 10),
            vec![
                "Abbey Road (remaster).mp3".to_string(),
                "road trip.mp3".to_string()
            ]
        );
        assert!(ix.search(&terms("abbey trip"), 10).is_empty());
        assert!(
            ix.search(&terms("abb"), 10).is_empty(),
            "keywords match whole words"
        );
        assert_eq!(ix.search(&terms("road"), 1).len(), 1, "limit applies");
        assert!(ix.search(&[], 10).is_empty());
    }

    #[test]
    fn bounded_and_removable() {
        let mut ix = Index::new(2);
        ix.insert("a one").unwrap();
        ix.insert("b two").unwrap();
        ix.insert("b two").unwrap();
        assert_eq!(ix.insert("c three"), Err(IndexError::Full(2)));
        assert_eq!(
            ix.insert(&"x".repeat(300)),
            Err(IndexError::NameTooLong(300))
        );
        assert_eq!(ix.insert("--"), Err(IndexError::NoKeywords));
        assert!(ix.remove("a one"));
        assert!(!ix.remove("a one"));
        assert!(ix.search(&terms("one"), 10).is_empty());
        ix.insert("c three").unwrap();
        assert_eq!(ix.search(&terms("three"), 10), vec!["c three".to_string()]);
        assert_eq!(ix.len(), 2);
    }
}
