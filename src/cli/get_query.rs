//! `get --query`: the content ids of every file matching a search, paged through the index.

use super::filters::FilterArgs;
use peershare::index::IndexClient;
use peershare::node::{FolderFile, MatchError, matching_files};
use peershare::protocol::MAX_SEARCH_LIMIT;

/// Every file matching `words` and the filters, best first, paging through the index, each
/// with the path its first source keeps it under; fails when more than `max` match (nothing
/// is downloaded then) or none does.
pub async fn matching(
    client: &mut IndexClient,
    filters: &FilterArgs,
    words: &[String],
    max: usize,
) -> anyhow::Result<Vec<FolderFile>> {
    let search = filters.search(&filters.query(words), MAX_SEARCH_LIMIT, 0);
    matching_files(client, search, max)
        .await
        .map_err(|e| match e {
            MatchError::Index(e) => e.into(),
            MatchError::TooMany {
                query,
                total,
                estimated,
                max,
            } => anyhow::anyhow!(
                "{}{total} files match {query:?}, more than --max-files {max}; narrow the query or raise --max-files",
                if estimated { "about " } else { "" }
            ),
            e @ MatchError::None(_) => anyhow::anyhow!("{e}"),
        })
}
