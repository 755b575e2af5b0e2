# Injected with -DCMAKE_PROJECT_INCLUDE by build_interfaces.sh. Some PyPI ROS wheels export CMake targets whose
# include folders exist only on the machine that built the wheels (/opt/python/...), and CMake refuses to generate
# with an imported target naming a missing folder. Dropping those entries once every find_package has run leaves
# the installed wheels untouched.
function(avag_drop_missing_include_dirs)
  get_directory_property(imported DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(target IN LISTS imported)
    get_target_property(folders "${target}" INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT folders)
      continue()
    endif()
    set(kept "")
    foreach(folder IN LISTS folders)
      # generator expressions are resolved at generate time; only literal paths can be checked here
      if(folder MATCHES "^\\$<" OR EXISTS "${folder}")
        list(APPEND kept "${folder}")
      endif()
    endforeach()
    set_target_properties("${target}" PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${kept}")
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL avag_drop_missing_include_dirs)
