"use strict";
// Markdown to safe DOM, for what the model writes.
//
// - marked parses (GitHub-flavoured: tables, fenced code, autolinks);
// - raw HTML in the text is shown as text, never as markup: a chat shows what the
//   model wrote, it never runs it (images too become plain links: the page loads
//   nothing from elsewhere, its CSP says so);
// - DOMPurify then sanitises marked's output (defence in depth): known tags and
//   attributes only, no style attributes (the CSP forbids them), links only to
//   http(s) and mailto, each opening a new tab with no access to this page;
// - code blocks are highlighted by highlight.js when their language is known, and get
//   a copy button (handled by app.js).
window.Markdown = (function () {
  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]);

  const parser = new marked.Marked({ gfm: true, breaks: true, async: false });
  parser.use({
    renderer: {
      html(token) { return escapeHtml(token.text); },
      image(token) { return `<a href="${escapeHtml(token.href)}">${escapeHtml(token.text || token.href)}</a>`; },
    },
  });

  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
  const PURIFY = {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "option", "video", "audio", "picture", "source", "iframe"],
    FORBID_ATTR: ["style", "id", "name", "srcset"],
    ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
    RETURN_DOM_FRAGMENT: true,
  };
  // Set once: a configuration passed to every call would be parsed again each time.
  DOMPurify.setConfig(PURIFY);

  function enhanceCode(fragment, highlight) {
    for (const code of fragment.querySelectorAll("pre > code")) {
      const pre = code.parentElement;
      // A long line scrolls the block, which the keyboard must reach too.
      pre.tabIndex = 0;
      const match = /(?:^|\s)language-([\w+#-]+)/.exec(code.className);
      const language = match ? match[1].toLowerCase() : "";
      if (highlight && language && hljs.getLanguage(language)) hljs.highlightElement(code);
      const block = document.createElement("div");
      block.className = "code-block";
      const bar = document.createElement("div");
      bar.className = "code-bar";
      const label = document.createElement("span");
      label.textContent = language || "text";
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy-code";
      copy.dataset.action = "copy-code";
      copy.textContent = "Copy";
      copy.setAttribute("aria-label", `Copy ${language || "text"} code`);
      bar.append(label, copy);
      pre.replaceWith(block);
      block.append(bar, pre);
    }
    for (const table of fragment.querySelectorAll("table")) {
      // Wide result tables scroll by themselves, not the page.
      const wrap = document.createElement("div");
      wrap.className = "table-wrap";
      wrap.tabIndex = 0;
      wrap.setAttribute("role", "region");
      wrap.setAttribute("aria-label", "Table");
      table.replaceWith(wrap);
      wrap.append(table);
    }
  }

  /// A fragment of safe elements for `text`; `highlight: false` skips highlighting
  /// (for a streaming answer's intermediate frames).
  function render(text, { highlight = true } = {}) {
    const fragment = DOMPurify.sanitize(parser.parse(text || ""));
    enhanceCode(fragment, highlight);
    return fragment;
  }

  return { render, escapeHtml };
})();
