// xlcf task pane: runs the server's scripts on the open workbook through xlwings' client protocol, and solves
// the active sheet's Solver model from its formulas.
//
// A script press reads the workbook with Office.js into the book payload xlwings' clients send (client, version,
// book, names, sheets with their values from A1 to the last used cell), POSTs it to
// xlwings/custom-scripts-call/<script> on the server that served this page, and applies the actions of the
// answer (setValues writes a block; alert shows its text here).
//
// "Solve this sheet" reads what xlwings' payload lacks: every sheet's used-range formulas (Range.formulas, A1
// English-locale) and values, and every defined name with its formula (hidden ones too: Solver keeps its model in
// hidden sheet-scoped names solver_opt, solver_adj, ...). It POSTs them to xlcf/solve-sheet and writes back only
// the variable cells of the answer; Excel recalculates the rest. On an error nothing is written.
"use strict";

(function () {
  const TOKEN_KEY = "xlcf-token";
  const VERSION = document.querySelector('meta[name="xlwings-version"]').content;
  const MAX_CELLS = 2000000;  // what the server solves from a pane at most (xlcf.server.sheet_solve.MAX_CELLS)
  const CHUNK_CELLS = 50000;  // cells per read: Excel on the web limits the size of one call's answer

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

  // A name's formula -> [sheet, address]: "=dotprod!$H$3:$V$17" -> ["dotprod", "H3:V17"];
  // "='my sheet'!$A$1,'my sheet'!$C$3" -> ["my sheet", "A1,C3"]; null for anything else (constants, other books,
  // areas on different sheets). Read from the formula: getRange() fails for names of several areas.
  function nameTarget(formula) {
    const text = String(formula).replace(/^=/, "");
    const areas = [];
    let i = 0;
    while (i < text.length) {
      let sheet = "";
      if (text[i] === "'") {
        i += 1;
        while (i < text.length && !(text[i] === "'" && text[i + 1] !== "'")) {
          sheet += text[i];
          i += text[i] === "'" ? 2 : 1;
        }
        i += 1;
      } else {
        const bang = text.indexOf("!", i);
        if (bang < 0) {
          return null;
        }
        sheet = text.slice(i, bang);
        i = bang;
      }
      if (text[i] !== "!") {
        return null;
      }
      const comma = text.indexOf(",", i);
      const end = comma < 0 ? text.length : comma;
      const cells = text.slice(i + 1, end).replace(/\$/g, "");
      if (!/^[A-Z]+[0-9]+(:[A-Z]+[0-9]+)?$/i.test(cells)) {
        return null;
      }
      areas.push([sheet, cells]);
      i = end + 1;
    }
    if (areas.length === 0 || areas.some((area) => area[0] !== areas[0][0])) {
      return null;
    }
    return [areas[0][0], areas.map((area) => area[1]).join(",")];
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
    bookNames.load("items/name,items/type,items/formula");
    await context.sync();

    const sheets = worksheets.items.map((sheet) => {
      const used = sheet.getUsedRangeOrNullObject(true);
      used.load("rowIndex,columnIndex,rowCount,columnCount");
      sheet.names.load("items/name,items/type,items/formula,items/scope");
      return { sheet: sheet, used: used };
    });
    await context.sync();

    sheets.forEach((entry) => {
      if (!entry.used.isNullObject) {
        // From A1, as xlwings' clients send it: cell (r, c) of the payload is row r, column c of the sheet.
        entry.range = entry.sheet.getRangeByIndexes(0, 0, entry.used.rowIndex + entry.used.rowCount,
          entry.used.columnIndex + entry.used.columnCount);
        entry.range.load("values");
      }
    });
    await context.sync();

    const positions = new Map(worksheets.items.map((sheet, index) => [sheet.name, index]));
    const names = [];
    const addNames = (items, scope) => {
      // Some Excel versions list the workbook's names in every sheet's collection too: those are not the sheet's.
      items.filter((item) => item.type === "Range" && !(scope && item.scope === "Workbook")).forEach((item) => {
        const target = nameTarget(item.formula);
        if (target === null || !positions.has(target[0])) {
          return;  // nothing a script can use
        }
        names.push({
          name: item.name,
          sheet_index: positions.get(target[0]),
          address: target[1],
          book_scope: scope === null,
          scope_sheet_name: scope ? scope.name : null,
          scope_sheet_index: scope ? scope.position : null,
        });
      });
    };
    addNames(bookNames.items, null);
    sheets.forEach((entry, position) => addNames(entry.sheet.names.items, { name: entry.sheet.name, position }));
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

  // POST a JSON body to a route of the server that served this page; the answer's text, or an Error holding the
  // server's one-line message.
  async function post(route, body) {
    const headers = { "Content-Type": "application/json" };
    const token = storedToken();
    if (token) {
      headers.Authorization = token;
    }
    const response = await fetch(route, { method: "POST", headers: headers, body: JSON.stringify(body) });
    const text = await response.text();
    if (!response.ok) {
      throw new Error(response.status === 401
        ? "the server wants its token: open 'Server token' below and enter the token of xlcf serve --token"
        : text);
    }
    return text;
  }

  async function press(button, work) {
    const buttons = document.querySelectorAll("#scripts button");
    buttons.forEach((b) => { b.disabled = true; });
    show(`${button.dataset.label}…`);
    const pressed = performance.now();
    try {
      await Office.onReady();
      await Excel.run((context) => work(context, () => ((performance.now() - pressed) / 1000).toFixed(2)));
    } catch (error) {
      show(String(error && error.message ? error.message : error), "error");
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  function runScript(script, button) {
    return press(button, async (context, seconds) => {
      const text = await post(`xlwings/custom-scripts-call/${encodeURIComponent(script)}`, await bookPayload(context));
      const notes = await applyActions(context, JSON.parse(text).actions || []);
      if (notes.length) {
        show(notes.join("\n"), "error");
      } else {
        show(`${button.dataset.label}: done in ${seconds()} s (see the status cell).`, "ok");
      }
    });
  }

  // What "Solve this sheet" sends: the active sheet's name, every sheet's used range (top-left cell, formulas,
  // values) and every defined name with its scope and formula.
  async function solvePayload(context) {
    const workbook = context.workbook;
    const worksheets = workbook.worksheets;
    worksheets.load("items/name");
    const active = worksheets.getActiveWorksheet();
    active.load("name");
    workbook.names.load("items/name,items/formula");
    await context.sync();

    const sheets = worksheets.items.map((sheet) => {
      const used = sheet.getUsedRangeOrNullObject(true);
      used.load("rowIndex,columnIndex,rowCount,columnCount");
      sheet.names.load("items/name,items/formula,items/scope");
      return { sheet: sheet, used: used, parts: [] };
    });
    await context.sync();

    const cells = sheets.reduce((n, e) => n + (e.used.isNullObject ? 0 : e.used.rowCount * e.used.columnCount), 0);
    if (cells > MAX_CELLS) {
      throw new Error(`the workbook's used ranges hold ${cells} cells, more than the ${MAX_CELLS} a solve from `
        + "Excel on the web takes: save the workbook and run `xlcf solve BOOK`");
    }
    sheets.forEach((entry) => {
      if (entry.used.isNullObject) {
        return;
      }
      const used = entry.used;
      const rows = Math.max(1, Math.floor(CHUNK_CELLS / used.columnCount));
      for (let r = 0; r < used.rowCount; r += rows) {
        const part = entry.sheet.getRangeByIndexes(used.rowIndex + r, used.columnIndex,
          Math.min(rows, used.rowCount - r), used.columnCount);
        part.load("formulas,values");
        entry.parts.push(part);
      }
    });
    await context.sync();

    const names = workbook.names.items.map((item) => ({ name: item.name, scope: null, formula: String(item.formula) }));
    sheets.forEach((entry) => entry.sheet.names.items.forEach((item) => {
      if (item.scope !== "Workbook") {  // see bookPayload: the workbook's names may be listed here too
        names.push({ name: item.name, scope: entry.sheet.name, formula: String(item.formula) });
      }
    }));
    return {
      sheet: active.name,
      sheets: sheets.map((entry) => ({
        name: entry.sheet.name,
        row: entry.used.isNullObject ? 1 : entry.used.rowIndex + 1,
        column: entry.used.isNullObject ? 1 : entry.used.columnIndex + 1,
        formulas: [].concat(...entry.parts.map((part) => part.formulas)),
        values: [].concat(...entry.parts.map((part) => part.values)),
      })),
      names: names,
    };
  }

  function solveSheet(button) {
    return press(button, async (context, seconds) => {
      const answer = JSON.parse(await post("xlcf/solve-sheet", await solvePayload(context)));
      const worksheets = context.workbook.worksheets;
      answer.variables.forEach((block) => {
        worksheets.getItem(block.sheet).getRange(block.address).values = block.values;
      });
      await context.sync();
      show(`${answer.status}; press took ${seconds()} s`, "ok");
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("#scripts button[data-script]").forEach((button) => {
      button.addEventListener("click", () => runScript(button.dataset.script, button));
    });
    const solve = document.getElementById("solve-sheet");
    solve.addEventListener("click", () => solveSheet(solve));
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
