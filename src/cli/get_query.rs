//! `get --query`: the content ids of every file matching a search, paged through the index.

use anyhow::bail;

use super::filters::FilterArgs;
use peershare::index::IndexClient;
use peershare::node::FolderFile;
use peershare::protocol::MAX_SEARCH_LIMIT;

/// Every file matching `words` and the filters, best first, paging through the index, each
/// with the path its first source keeps it under; fails when more than `max` match (nothing
/// is downloaded then) or none does.
pub async fn matching_files(
    client: &mut IndexClient,
    filters: &FilterArgs,
    words: &[String],
    max: usize,
) -> anyhow::Result<Vec<FolderFile>> {
    let query = filters.query(words);
    let mut ids = Vec::new();
    let mut offset = 0u32;
    loop {
        let page = client
            .search_with(filters.search(&query, MAX_SEARCH_LIMIT, offset))
            .await?;
        let about = if page.estimated { "about " } else { "" };
        if page.total as usize > max || ids.len() + page.files.len() > max {
            bail!(
                "{about}{} files match {query:?}, more than --max-files {max}; narrow the query or raise --max-files",
                page.total.max((ids.len() + page.files.len()) as u64)
            );
        }
        let got = page.files.len() as u32;
        ids.extend(page.files.iter().map(|f| {
            FolderFile {
                path: f
                    .peers
                    .first()
                    .and_then(|p| p.path.clone())
                    .unwrap_or_else(|| f.name.clone()),
                size: f.size,
                content_id: f.content_id,
            }
        }));
        if !page.truncated || got == 0 {
            break;
        }
        offset += got;
    }
    if ids.is_empty() {
        bail!("no file matches {query:?}");
    }
    Ok(ids)
}
