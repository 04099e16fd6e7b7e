// xlcf task pane: runs the server's scripts on the open workbook through xlwings' client protocol.
//
// A press reads the workbook with Office.js into the book payload xlwings' clients send (client, version, book,
// names, sheets with their values from A1 to the last used cell), POSTs it to
// xlwings/custom-scripts-call/<script> on the server that served this page, and applies the actions of the
// answer (setValues writes a block; alert shows its text here).
"use strict";

(function () {
  const TOKEN_KEY = "xlcf-token";
  const VERSION = document.querySelector('meta[name="xlwings-version"]').content;

  function storedToken() {
    try {
      return window.localStorage.getItem(TOKEN_KEY) || "";
    } catch (error) {  // storage can be off (private windows): the pane still works without a token
      return "";
    }
  }
  // functions.js reads the token through this (custom functions share the pane's runtime).
  globalThis.xlcfToken = storedToken;

  function show(text, kind) {
    const message = document.getElementById("message");
    message.textContent = text;
    message.className = kind || "";
  }

  // "dotprod!H3:V17" / "'my sheet'!A1" -> ["dotprod", "H3:V17"]
  function splitAddress(address) {
    const cut = address.lastIndexOf("!");
    let sheet = address.slice(0, cut);
    if (sheet.startsWith("'") && sheet.endsWith("'")) {
      sheet = sheet.slice(1, -1).replace(/''/g, "'");
    }
    return [sheet, address.slice(cut + 1)];
  }

  async function bookPayload(context) {
    const workbook = context.workbook;
    workbook.load("name");
    const worksheets = workbook.worksheets;
    worksheets.load("items/name");
    const active = worksheets.getActiveWorksheet();
    active.load("position");
    const selection = workbook.getSelectedRange();
    selection.load("address");
    const bookNames = workbook.names;
    bookNames.load("items/name,items/type");
    await context.sync();

    const sheets = worksheets.items.map((sheet) => {
      const used = sheet.getUsedRangeOrNullObject(true);
      used.load("rowIndex,columnIndex,rowCount,columnCount");
      sheet.names.load("items/name,items/type");
      return { sheet: sheet, used: used };
    });
    await context.sync();

    const named = [];
    const addNames = (items, scope) => {
      items.filter((item) => item.type === "Range").forEach((item) => {
        const range = item.getRange();
        range.load("address");
        named.push({ item: item, range: range, scope: scope });
      });
    };
    addNames(bookNames.items, null);
    sheets.forEach((entry, position) => {
      if (!entry.used.isNullObject) {
        // From A1, as xlwings' clients send it: cell (r, c) of the payload is row r, column c of the sheet.
        entry.range = entry.sheet.getRangeByIndexes(0, 0, entry.used.rowIndex + entry.used.rowCount,
          entry.used.columnIndex + entry.used.columnCount);
        entry.range.load("values");
      }
      addNames(entry.sheet.names.items, { name: entry.sheet.name, position: position });
    });
    await context.sync();

    const positions = new Map(worksheets.items.map((sheet, index) => [sheet.name, index]));
    const names = [];
    named.forEach((entry) => {
      const [sheetName, cells] = splitAddress(entry.range.address);
      if (!positions.has(sheetName)) {
        return;  // a name on another workbook's range: nothing a script can use
      }
      names.push({
        name: entry.item.name,
        sheet_index: positions.get(sheetName),
        address: cells,
        book_scope: entry.scope === null,
        scope_sheet_name: entry.scope ? entry.scope.name : null,
        scope_sheet_index: entry.scope ? entry.scope.position : null,
      });
    });
    return {
      client: "Office.js",
      version: VERSION,
      book: {
        name: workbook.name,
        active_sheet_index: active.position,
        selection: selection.address.split("!").pop(),
      },
      names: names,
      sheets: sheets.map((entry) => ({
        name: entry.sheet.name,
        values: entry.range ? entry.range.values : [[]],
        pictures: [],
        tables: [],
      })),
    };
  }

  const ACTIONS = {
    setValues: (sheets, action) => {
      // null means "leave the cell as it is" to Office.js; to xlwings it is an empty cell.
      const values = action.values.map((row) => row.map((value) => (value === null ? "" : value)));
      sheets.items[action.sheet_position]
        .getRangeByIndexes(action.start_row, action.start_column, action.row_count, action.column_count)
        .values = values;
    },
    alert: (sheets, action, notes) => {
      notes.push(String(action.args[0]));
    },
  };

  async function applyActions(context, actions) {
    const sheets = context.workbook.worksheets;
    sheets.load("items/name");
    await context.sync();
    const notes = [];
    for (const action of actions) {
      const apply = ACTIONS[action.func];
      if (!apply) {
        throw new Error(`the server asked for '${action.func}', which this task pane cannot do`);
      }
      apply(sheets, action, notes);
    }
    await context.sync();
    return notes;
  }

  async function runScript(script, button) {
    const buttons = document.querySelectorAll("#scripts button");
    buttons.forEach((b) => { b.disabled = true; });
    show(`${button.dataset.label}…`);
    const pressed = performance.now();
    try {
      await Office.onReady();
      await Excel.run(async (context) => {
        const payload = await bookPayload(context);
        const headers = { "Content-Type": "application/json" };
        const token = storedToken();
        if (token) {
          headers.Authorization = token;
        }
        const response = await fetch(`xlwings/custom-scripts-call/${encodeURIComponent(script)}`, {
          method: "POST", headers: headers, body: JSON.stringify(payload),
        });
        const text = await response.text();
        if (!response.ok) {
          throw new Error(response.status === 401
            ? "the server wants its token: open 'Server token' below and enter the token of xlcf serve --token"
            : text);
        }
        const notes = await applyActions(context, JSON.parse(text).actions || []);
        const seconds = ((performance.now() - pressed) / 1000).toFixed(2);
        if (notes.length) {
          show(notes.join("\n"), "error");
        } else {
          show(`${button.dataset.label}: done in ${seconds} s (see the status cell).`, "ok");
        }
      });
    } catch (error) {
      show(String(error && error.message ? error.message : error), "error");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("#scripts button").forEach((button) => {
      button.addEventListener("click", () => runScript(button.dataset.script, button));
    });
    const input = document.getElementById("token");
    input.value = storedToken();
    document.getElementById("save-token").addEventListener("click", () => {
      try {
        window.localStorage.setItem(TOKEN_KEY, input.value.trim());
        show("Token saved.", "ok");
      } catch (error) {
        show("This browser does not keep the token (storage is off).", "error");
      }
    });
  });

  // Office calls this when the add-in starts; in a plain browser tab it never comes (the buttons explain why).
  if (typeof Office !== "undefined" && Office.onReady) {
    Office.onReady();
  }
})();
