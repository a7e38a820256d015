// The routing editor: a problem's "line N" link also puts the cursor on that line of the
// textarea (the anchor already scrolls to the numbered listing). Works without it.
"use strict";
(function () {
  var editor = document.getElementById("text");
  if (!editor) { return; }
  document.querySelectorAll("a.line-link").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var line = parseInt(link.dataset.line, 10);
      if (!line) { return; }
      event.preventDefault();
      var lines = editor.value.split("\n");
      var start = 0;
      for (var i = 0; i < line - 1 && i < lines.length; i++) { start += lines[i].length + 1; }
      var end = start + (lines[line - 1] || "").length;
      editor.focus();
      editor.setSelectionRange(start, end);
      // Scroll the textarea so the line is in view: an estimate from the line height.
      var height = parseFloat(getComputedStyle(editor).lineHeight) || 20;
      editor.scrollTop = Math.max(0, (line - 5) * height);
      var row = document.getElementById("line-" + line);
      if (row) { row.classList.add("target"); }
    });
  });
})();
